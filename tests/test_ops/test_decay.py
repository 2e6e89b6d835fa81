"""RMT's decay masks: made once per stage and shape, shared by the stage's
blocks in forward and in what autograd saves for backward."""
import torch
from torch.testing import assert_close

from mmvitmix.models.backbones.rmt import RMT
from mmvitmix.ops import decay as decay_module
from mmvitmix.ops.decay import RetentionDecay, decay_bias_1d, decay_bias_2d

# two blocks in every stage, so that a per-block mask would show
ARCH = dict(
    embed_dims=[16, 32, 32, 32],
    depths=[2, 2, 2, 2],
    num_heads=[2, 2, 2, 2],
    init_values=[2, 2, 2, 2],
    heads_ranges=[4, 4, 4, 4],
    mlp_ratios=[2, 2, 2, 2],
    chunkwise_recurrents=[True, True, False, False])


def test_masks_are_the_official_distances():
    log_decay = torch.tensor([-0.5, -0.25], dtype=torch.float64)
    one = decay_bias_1d(4, log_decay, torch.float64)
    assert_close(one[1], -0.25 * (torch.arange(4.)[:, None] -
                                  torch.arange(4.)[None]).abs().double())
    two = decay_bias_2d(2, 3, log_decay, torch.float64)
    # token 0 = (0, 0), token 5 = (1, 2): Manhattan distance 3
    assert two[0, 0, 5].item() == -1.5 and two[0, 5, 0].item() == -1.5
    d = RetentionDecay(log_decay)
    assert d.mask(6, 3, torch.float64) is d.mask(6, 3, torch.float64)
    assert torch.equal(d.mask(6, 3, torch.float64), two)
    assert d.mask(6, 0, torch.float64) is not d.mask(6, 3, torch.float64)


def test_one_mask_per_stage_and_shape(monkeypatch):
    """Forward and backward of RMT with 2 blocks per stage build each
    stage's masks once (not once per block), and autograd keeps one copy."""
    built = []
    for name in ('decay_bias_1d', 'decay_bias_2d'):
        original = getattr(decay_module, name)

        def counting(*args, _original=original, _name=name):
            out = _original(*args)
            built.append((_name, tuple(out.shape)))
            return out

        monkeypatch.setattr(decay_module, name, counting)
    model = RMT(arch=ARCH, attn_backend='sdpa', drop_path_rate=0.)
    saved = set()  # storages of the (1, heads, L, L) masks autograd saves

    def pack(t):
        if (t.dim() == 4 and t.shape[0] == 1 and t.shape[-1] == t.shape[-2]
                and not t.requires_grad):
            saved.add(t.untyped_storage().data_ptr())
        return t

    x = torch.randn(1, 3, 96, 64)  # stage grids 24x16, 12x8, 6x4, 3x2
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    sum(o.sum() for o in outs).backward()
    # decomposed stages: a W-pass and an H-pass mask; whole stages: one
    assert sorted(built) == sorted([
        ('decay_bias_1d', (2, 16, 16)), ('decay_bias_1d', (2, 24, 24)),
        ('decay_bias_1d', (2, 8, 8)), ('decay_bias_1d', (2, 12, 12)),
        ('decay_bias_2d', (2, 24, 24)), ('decay_bias_2d', (2, 6, 6))
    ]), built
    # autograd keeps those six tensors, shared by both blocks of a stage
    assert len(saved) == len(built), saved
