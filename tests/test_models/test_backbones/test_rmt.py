"""RMT backbone: parity with the official code, conversion, options, errors."""
import copy
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from torch.testing import assert_close

from mmvitmix.models.backbones.rmt import (RMT, RMT_CLASSIFIER_PREFIXES,
                                           convert_rmt)
from mmvitmix.testing import assert_close_rel
from tests.utils import tiny_arch, zeros_like_table
from .conftest import load_golden, load_golden_json

GOLDEN_FILES = ['rmt_tiny_axial.pt', 'rmt_tiny_whole_ls.pt']
TINY = tiny_arch('RMT')


@pytest.fixture(scope='module')
def official_tables():
    return load_golden_json()


# --------------------------------------------------------------- parity
@pytest.mark.parametrize('name', GOLDEN_FILES)
def test_golden_stage_outputs(name):
    golden = load_golden(name)
    model = RMT(arch=golden['config'], out_norm_cfg=None).eval()
    report = model.load_pretrained(golden['checkpoint'])
    assert report == dict(missing=[], unexpected=[], fresh=[])
    with torch.no_grad():
        outs = model(golden['input'])
    assert len(outs) == 4
    for out, ref in zip(outs, golden['stage_outputs']):
        assert out.shape == ref.shape
        assert_close_rel(out, ref, 1e-5)


@pytest.mark.parametrize('name', GOLDEN_FILES)
def test_golden_normed_outputs(name):
    golden = load_golden(name)
    model = RMT(arch=golden['config']).eval()
    report = model.load_pretrained(golden['checkpoint'])
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['fresh']) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    with torch.no_grad():
        outs = model(golden['input'])
    for out, ref in zip(outs, golden['normed_outputs']):
        assert_close_rel(out, ref, 1e-5)
    # the official detection backbone's extra_norms map onto norm{i}
    det_ckpt = dict(golden['checkpoint']['model'])
    det_ckpt.update({k: v + 0.5 for k, v in golden['extra_norms'].items()})
    converted = convert_rmt(det_ckpt)
    assert torch.equal(converted['norm2.weight'],
                       golden['extra_norms']['extra_norms.2.weight'] + 0.5)


def test_golden_mismatch_is_detected():
    """A wrong mapping (swapped q/k) must break parity: the test can fail."""
    golden = load_golden('rmt_tiny_axial.pt')
    state = convert_rmt(golden['checkpoint'])
    key_q = 'stages.0.blocks.0.attn.q_proj.weight'
    key_k = 'stages.0.blocks.0.attn.k_proj.weight'
    state[key_q], state[key_k] = state[key_k], state[key_q]
    model = RMT(arch=golden['config'], out_norm_cfg=None).eval()
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        out = model(golden['input'])[0]
    ref = golden['stage_outputs'][0]
    assert (out - ref).abs().max() > 1e-3


# ----------------------------------------------------- official releases
@pytest.mark.parametrize('variant, release', [
    ('t', 'rmt_t'), ('s', 'rmt_s'), ('b', 'rmt_b'), ('l', 'rmt_l'),
    ('s', 'rmt_s_token_label'), ('b', 'rmt_b_token_label'),
    ('l', 'rmt_l_token_label')])
def test_every_official_key_converted(variant, release, official_tables):
    """Plain and token-labeling (RMT-S*/B*/L*, with ``aux_head``) releases:
    every key converted to one of ours with its shape, or dropped on
    purpose as classification-only."""
    table = official_tables[release]
    for key, value in table['config'].items():
        assert RMT.parse_arch(variant)[key] == value, key
    with torch.device('meta'):  # shapes only: no allocation, no init
        model = RMT(arch=variant, drop_path_rate=0.)
    ours = model.state_dict()
    official = zeros_like_table(table['checkpoint_keys'], device='meta')
    converted = convert_rmt({'model': official})
    dropped = [k for k in official if k.startswith(RMT_CLASSIFIER_PREFIXES)]
    assert len(converted) + len(dropped) == len(official)
    for key, value in converted.items():
        assert key in ours, key
        assert ours[key].shape == value.shape, key
    missing = set(ours) - set(converted)
    assert missing == {
        f'norm{i}.{p}'
        for i in range(4) for p in ('weight', 'bias')
    }
    # parameter count: official total minus its classification parts
    cls_params = sum(
        torch.Size(shape).numel()
        for key, shape in table['checkpoint_keys'].items()
        if key.startswith(RMT_CLASSIFIER_PREFIXES) and not key.endswith(
            ('running_mean', 'running_var', 'num_batches_tracked')))
    n_ours = sum(p.numel() for n, p in model.named_parameters()
                 if not n.startswith('norm'))
    assert n_ours == table['params_total'] - cls_params


def test_converter_is_idempotent_and_strict():
    golden = load_golden('rmt_tiny_axial.pt')
    once = convert_rmt(golden['checkpoint']['model'])
    assert convert_rmt(once) is not None
    assert convert_rmt(once).keys() == once.keys()
    # a detector checkpoint: backbone.* prefix is stripped
    prefixed = {'backbone.' + k: v for k, v in once.items()}
    assert convert_rmt(prefixed).keys() == once.keys()
    bad = dict(golden['checkpoint']['model'])
    bad['layers.0.blocks.0.unknown.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='unknown'):
        convert_rmt(bad)


def test_pretrained_init_cfg_loads_official_file(tmp_path):
    golden = load_golden('rmt_tiny_axial.pt')
    path = tmp_path / 'official.pth'
    torch.save(golden['checkpoint'], path)
    model = RMT(
        arch=golden['config'],
        out_norm_cfg=None,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        out = model(golden['input'])
    assert_close_rel(out[3], golden['stage_outputs'][3], 1e-5)


def test_token_label_checkpoint_loads(tmp_path):
    """A token-labeling release (official keys + ``aux_head``) loads through
    init_cfg with the same result as the plain file: aux_head is dropped."""
    golden = load_golden('rmt_tiny_axial.pt')
    state = dict(golden['checkpoint']['model'])
    dims = golden['config']['embed_dims'][-1]
    state['aux_head.weight'] = torch.randn(1000, dims)
    state['aux_head.bias'] = torch.randn(1000)
    path = tmp_path / 'RMT-S-label.pth'
    torch.save({'model': state}, path)
    model = RMT(
        arch=golden['config'],
        out_norm_cfg=None,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        out = model(golden['input'])
    assert_close_rel(out[3], golden['stage_outputs'][3], 1e-5)


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    golden = load_golden('rmt_tiny_axial.pt')
    state = convert_rmt(golden['checkpoint'])
    state.pop('stages.1.blocks.0.ffn.fc1.weight')
    state['stages.0.extra_thing'] = torch.zeros(2)
    model = RMT(arch=golden['config'])
    logger = MMLogger.get_current_instance()
    messages = []
    handler = _ListHandler(messages)
    logger.addHandler(handler)
    try:
        report = model.load_pretrained(state)
    finally:
        logger.removeHandler(handler)
    assert report['missing'] == ['stages.1.blocks.0.ffn.fc1.weight']
    assert report['unexpected'] == ['stages.0.extra_thing']
    text = '\n'.join(messages)
    assert 'stages.1.blocks.0.ffn.fc1.weight' in text
    assert 'stages.0.extra_thing' in text


class _ListHandler(logging.Handler):
    """Collects formatted log messages."""

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def emit(self, record):
        self.sink.append(record.getMessage())


# --------------------------------------------------------- shapes, sizes
@pytest.mark.parametrize('hw,expected', [
    ((97, 161), [(25, 41), (13, 21), (7, 11), (4, 6)]),
    ((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
    ((64, 33), [(16, 9), (8, 5), (4, 3), (2, 2)]),
])
def test_odd_input_sizes(hw, expected):
    model = RMT(arch=TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert [tuple(o.shape[-2:]) for o in outs] == expected


def test_in_place_residual_sums_keep_gradients(monkeypatch):
    """Residual sums written into the branch outputs (``add_into``) give the
    gradients of plain out-of-place sums, with drop path and layer scale."""
    import mmvitmix.models.backbones.rmt as rmt_module

    def run():
        torch.manual_seed(0)
        model = RMT(arch=TINY, drop_path_rate=0.3).train()
        x = torch.randn(2, 3, 40, 56, requires_grad=True)
        torch.manual_seed(1)  # the same drop-path draws in both runs
        outs = model(x)
        grads = torch.autograd.grad(
            sum(o.pow(2).mean() for o in outs), [x, *model.parameters()])
        return outs, grads

    outs, grads = run()
    monkeypatch.setattr(rmt_module, 'add_into', lambda a, b: a + b)
    ref_outs, ref_grads = run()
    for got, want in zip((*outs, *grads), (*ref_outs, *ref_grads)):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_add_into_keeps_the_promoted_dtype():
    from mmvitmix.models.backbones.rmt import add_into
    fresh = torch.ones(3, dtype=torch.bfloat16)
    out = add_into(fresh, torch.full((3, ), 0.001))
    assert out.dtype == torch.float32 and fresh[0] == 1  # not in place
    fresh = torch.ones(3)
    assert add_into(fresh, torch.ones(3)) is fresh and fresh[0] == 2


# ------------------------------------------------------------ bad input
def test_bad_arch_errors():
    """RMT's arch checks (inputs, unknown arguments, out_indices: every
    backbone, test_contract.py)."""
    with pytest.raises(ValueError, match=r"accepted names are \['b', 'l'"):
        RMT(arch='xl')
    partial = copy.deepcopy(TINY)
    partial.pop('heads_ranges')
    with pytest.raises(ValueError, match='missing keys.*heads_ranges'):
        RMT(arch=partial)
    with pytest.raises(ValueError, match='unknown keys'):
        RMT(arch={**TINY, 'window_size': 7})
    with pytest.raises(ValueError, match='4 entries'):
        RMT(arch={**TINY, 'depths': [1, 1, 1]})


def test_training_graph_has_no_copyslices():
    """Residual and LePE sums are not written into views under autograd:
    a ``CopySlices`` node copies the gradient four times in backward."""
    model = RMT(arch=tiny_arch('RMT')).train()
    outs = model(torch.randn(1, 3, 64, 64))
    names, stack, seen = set(), [o.grad_fn for o in outs], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    assert 'CopySlices' not in names
    assert 'ScaledDotProductFlashAttentionForCpuBackward0' in names
