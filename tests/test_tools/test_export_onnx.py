"""tools/deploy/export_onnx.py: every backbone (tiny archs), a detector's
backbone + neck and a whole segmentor, run in onnxruntime."""
import pytest
import torch

from mmvitmix.models.backbones import (ContainerLight, ResT, ResTV2,
                                       RIFormer, RMT)
from tests.utils import REPO_ROOT, load_script, tiny_arch

pytest.importorskip('onnx')
pytest.importorskip('onnxscript')
pytest.importorskip('onnxruntime')
export_onnx = load_script('tools/deploy/export_onnx.py')

#: ONNX export + onnxruntime (about 5 minutes)
pytestmark = pytest.mark.slow


def _randomize_norms(model):
    """Trained-like BatchNorm statistics (the export must keep them)."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape,
                                             generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape,
                                           generator=gen) + 0.5)


@pytest.mark.parametrize('build, dynamic', [
    (lambda: RMT(arch=tiny_arch('RMT'), drop_path_rate=0.), True),
    (lambda: ResT(arch=tiny_arch('ResT'), drop_path_rate=0.), True),
    (lambda: ResTV2(arch=tiny_arch('ResTV2'), drop_path_rate=0.), True),
    (lambda: ContainerLight(arch=tiny_arch('ContainerLight'),
                            drop_path_rate=0.), False),
    (lambda: RIFormer(arch=tiny_arch('RIFormer'), drop_path_rate=0.), True),
], ids=['rmt', 'rest', 'restv2', 'container', 'riformer'])
def test_backbones_export_and_match(tmp_path, build, dynamic):
    torch.manual_seed(0)
    backbone = build().eval()
    _randomize_norms(backbone)
    module = export_onnx.BackboneExport(backbone).eval()
    folded = export_onnx.reparameterize(module)
    assert bool(folded) == isinstance(backbone, RIFormer)
    names = [f'feat{i}' for i in range(4)]
    out = str(tmp_path / 'backbone.onnx')
    done, why = export_onnx.export_with_fallback(module, names, (64, 96), out,
                                                 True)
    # all but Container-Light export with symbolic height and width
    assert done is dynamic and (why is None) is dynamic, why
    shapes = [(64, 96)] + ([(99, 157)] if dynamic else [])
    worst, lines = export_onnx.verify(module, out, shapes, names, 1e-4)
    assert worst <= 1e-4, lines
    import onnx
    graph = onnx.load(out).graph
    domains = {n.domain for n in graph.node}
    assert domains <= {'', 'ai.onnx'}, domains  # standard ops only


def _cli(*args):
    return export_onnx.main([str(a) for a in args])


def test_detector_backbone_and_neck(tmp_path, capsys):
    out = tmp_path / 'det.onnx'
    code = _cli(REPO_ROOT / 'configs/rmt/retinanet_rmt_t_1x.py', out,
                '--shape', 64, 96)
    text = capsys.readouterr().out
    assert code == 0, text
    assert 'backbone + neck' in text and 'feat4' in text
    assert out.is_file()


def test_segmentor_whole_model(tmp_path, capsys):
    """The whole Semantic FPN segmentor. Its dynamic graph does not
    reproduce PyTorch at a second size (torch 2.13), so the tool says so
    and keeps a verified fixed-size export."""
    out = tmp_path / 'seg.onnx'
    code = _cli(REPO_ROOT / 'configs/rmt/fpn_rmt_t_80k_ade20k.py', out,
                '--shape', 64, 64, '--dynamic')
    text = capsys.readouterr().out
    assert code == 0, text
    assert 'segmentor (backbone, neck, decode head, resize)' in text
    assert 'seg_logits (1, 150, 64, 64)' in text
    assert 'NOTE: fixed-size export (64x64)' in text
    import onnx
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 64, 64]


def test_riformer_deploy_form_is_said(tmp_path, capsys):
    out = tmp_path / 'rif.onnx'
    code = _cli('mmvitmix.RIFormer', '--arch', 's12', out, '--shape', 64, 64)
    text = capsys.readouterr().out
    assert code == 0, text
    assert 're-parameterised for deployment' in text


def test_tolerance_failure_deletes_the_file(tmp_path, capsys):
    out = tmp_path / 'rmt.onnx'
    code = _cli('RMT', '--arch', 't', out, '--shape', 64, 64, '--tol', 0)
    captured = capsys.readouterr()
    assert code == 1 and 'deleted' in captured.err
    assert not out.exists()


@pytest.mark.parametrize('args, match', [
    (['RMT', 'out.txt'], 'must end in .onnx'),
    (['configs/rmt/fpn_rmt_t_80k_ade20k.py', '--arch', 't', 'o.onnx'],
     '--arch applies to backbone types'),
    (['RMT', 'o.onnx', '--shape', '16', '16'], 'at least 32x32'),
    (['RMT', 'o.onnx', '--shape', '48', '64', '--dynamic'], 'from 64 up'),
])
def test_bad_arguments(args, match, capsys):
    with pytest.raises(SystemExit):
        export_onnx.parse_args(args)
    assert match in capsys.readouterr().err
