"""tools/deploy/reparameterize.py on detectors and segmentors with RIFormer."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS

from mmvitmix.testing import assert_close_rel
from tests.utils import REPO_ROOT, load_script

TOOL = REPO_ROOT / 'tools' / 'deploy' / 'reparameterize.py'
CONFIGS = REPO_ROOT / 'configs'


def load_tool():
    return load_script(TOOL.relative_to(REPO_ROOT))


def build(tool, config, **options):
    cfg = tool.load_config(str(config), options or None)
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    return model.eval()


def random_checkpoint(tool, config, path, seed=0):
    """A 'trained' checkpoint: every float parameter random."""
    torch.manual_seed(seed)
    model = build(tool, config)
    gen = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen)

    with torch.no_grad():  # the parts the fold touches, at trained scales
        for name, p in model.backbone.named_parameters():
            if 'gamma' in name:
                p.copy_(0.1 * randn(p.shape))
            elif name.endswith('token_mixer.weight'):
                p.copy_(0.5 * randn(p.shape))
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.2 * randn(p.shape))
            elif 'norm' in name or 'token_mixer' in name:
                p.copy_(0.1 * randn(p.shape))
    torch.save({'state_dict': model.state_dict(),
                'meta': dict(epoch=12, dataset_meta=dict(classes=('a', )))},
               path)
    return model


@pytest.mark.parametrize('config', [
    'riformer/retinanet_riformer_s12_1x.py',
    'riformer/maskrcnn_riformer_s12_1x.py',
    'riformer/fpn_riformer_s12_40k_ade20k.py',
    'riformer/riformer_s12_in1k_cls.py',
])
@pytest.mark.slow  # full-size detectors / a training run
def test_tool_converts_and_preserves_outputs(tmp_path, config):
    tool = load_tool()
    src = tmp_path / 'trained.pth'
    trained = random_checkpoint(tool, CONFIGS / config, src)
    dst = tmp_path / 'deploy' / 'model.pth'
    code = tool.main([str(CONFIGS / config), str(src), str(dst),
                      '--shape', '128', '160'])
    assert code == 0
    out = torch.load(dst, map_location='cpu', weights_only=False)
    assert set(out) == {'state_dict', 'meta'}
    assert out['meta']['deploy'] is True
    assert out['meta']['epoch'] == 12  # the source meta is kept
    assert out['meta']['reparameterize_max_rel_diff'] < 1e-5
    keys = out['state_dict'].keys()
    assert not any('token_mixer' in k for k in keys)
    assert any('norm_reparam' in k for k in keys)

    # the deploy twin of the config loads it strictly and agrees with the
    # training model on a fresh input
    deploy_cfg = CONFIGS / 'riformer' / 'deploy' / (
        config.split('/')[1][:-3] + '_deploy.py')
    deployed = build(tool, deploy_cfg)
    assert deployed.backbone.deploy
    deployed.load_state_dict(out['state_dict'], strict=True)
    x = torch.randn(1, 3, 96, 128)
    samples = tool._fake_data_samples(deployed, 96, 128)
    before, proposals = tool._outputs(trained, x, samples)
    after, _ = tool._outputs(deployed, x, samples, proposals)
    assert len(before) == len(after) >= 2  # backbone and model outputs
    assert any(n.startswith('model') for n, _ in before)
    for (name, a), (_, b) in zip(after, before):
        assert_close_rel(a, b, 1e-5)

    # the deploy config also loads the training-structure checkpoint itself
    direct = build(tool, deploy_cfg)
    direct.load_state_dict(torch.load(src)['state_dict'], strict=True)
    direct_out, _ = tool._outputs(direct, x, samples, proposals)
    for (name, a), (_, b) in zip(direct_out, before):
        assert_close_rel(a, b, 1e-5)


def test_tool_fails_when_outputs_change(tmp_path, monkeypatch, capsys):
    tool = load_tool()
    config = CONFIGS / 'riformer' / 'retinanet_riformer_s12_1x.py'
    src = tmp_path / 'trained.pth'
    random_checkpoint(tool, config, src)
    from mmvitmix.models.backbones import riformer

    def wrong_fold(norm_w, norm_b, mix_w, mix_b):
        return norm_w * mix_w, norm_b * mix_w + mix_b  # forgot the "- 1"

    monkeypatch.setattr(riformer, 'fold_affine_into_norm', wrong_fold)
    dst = tmp_path / 'model.pth'
    code = tool.main([str(config), str(src), str(dst), '--shape', '96',
                      '128'])
    assert code == 1
    assert 'outputs changed after switch_to_deploy' in capsys.readouterr().err
    assert not dst.exists()


def test_tool_refuses_a_model_without_switch_to_deploy(tmp_path):
    tool = load_tool()
    config = CONFIGS / 'riformer' / 'retinanet_riformer_s12_1x.py'
    options = {
        'model.backbone': dict(
            _delete_=True, type='ResNet', depth=18, out_indices=(1, 2, 3)),
        'model.neck.in_channels': [128, 256, 512],
    }
    model = build(tool, config, **options)
    src = tmp_path / 'resnet.pth'
    torch.save({'state_dict': model.state_dict()}, src)
    with pytest.raises(RuntimeError, match='no module .* switch_to_deploy'):
        tool.reparameterize(str(config), str(src), str(tmp_path / 'o.pth'),
                            cfg_options=options)


def _run(*args, cwd=REPO_ROOT, timeout=900):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH')
                            else []))
    return subprocess.run([sys.executable, *map(str, args)],
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


@pytest.mark.slow  # full-size detectors / a training run
def test_demo_train_then_reparameterize(tmp_path):
    """Train the RIFormer demo for two iterations, convert what it saved."""
    if not (REPO_ROOT / 'data' / 'demo' / 'coco' / 'annotations' /
            'instances_train.json').is_file():
        pytest.skip('demo data (data/demo/coco) is not present')
    config = CONFIGS / 'demo' / 'maskrcnn_riformer_s12_demo.py'
    work_dir = tmp_path / 'work'
    proc = _run(
        REPO_ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2',
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.logger.interval=1')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = work_dir / 'iter_2.pth'
    assert ckpt.is_file(), sorted(p.name for p in work_dir.iterdir())
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    assert any('token_mixer' in k for k in state)

    dst = tmp_path / 'deploy.pth'
    proc = _run(TOOL, config, ckpt, dst, '--shape', '128', '128')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'max relative difference' in proc.stdout
    deploy_state = torch.load(dst, map_location='cpu',
                              weights_only=False)['state_dict']
    assert not any('token_mixer' in k for k in deploy_state)
    assert len(state) - len(deploy_state) == 2 * 12  # 12 blocks: w, b each


def test_tool_never_overwrites_its_input(tmp_path, capsys):
    tool = load_tool()
    config = CONFIGS / 'riformer' / 'retinanet_riformer_s12_1x.py'
    src = tmp_path / 'trained.pth'
    src.write_bytes(b'precious')
    from mmvitmix.apis import ToolError
    for out in (src, tmp_path / '.' / 'trained.pth'):
        with pytest.raises(ToolError, match='is the input file'):
            tool.main([str(config), str(src), str(out)])
    assert src.read_bytes() == b'precious'
