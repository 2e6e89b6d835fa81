"""Visualise RMT's spatial decay and a stage's effective receptive field.

Panels of the PNG written to ``--out``:

1. whole ReSA: the decay ``γ_h^(|Δy| + |Δx|)`` of head ``--head`` of stage
   ``--stage`` around the query point (late stages; a mask over all H·W
   tokens);
2. decomposed ReSA: what each of its two passes weights: the W pass the
   query's row with ``γ_h^|Δx|``, then the H pass the query's column with
   ``γ_h^|Δy|`` (early stages). Composed, the two passes reach every token
   with the separable weight ``γ_h^|Δx| · γ_h^|Δy|``: the same decay as the
   whole mask, applied in two softmaxes;
3. with ``--erf``: the effective receptive field of the stage: ``|∂y/∂x|``
   summed over channels, where ``y`` is the sum over channels of the
   stage's output at its centre and ``x`` the input image (log scale).

``γ_h`` is the stage's ``rel_pos.log_decay`` (the official
``RetNetRelPos2d`` values, or those of the checkpoint). Without
``--checkpoint`` the backbone has its random initialisation. A checkpoint
may be an mmvitmix backbone, a whole detector / segmentor (``backbone.``
keys, e.g. ``make demo``'s ``work_dirs/demo/iter_360.pth``) or an official
RMT file; it must provide at least ``--min-coverage`` (default 0.9) of the
backbone's parameters with matching shapes (docs/reliability.md), and
missing and unexpected keys are reported.

Example::

    python tools/analysis_tools/visualize_decay.py --arch t --stage 2 \\
        --head 3 --erf --image data/demo/coco/val/<image>.jpg \\
        --checkpoint work_dirs/demo/iter_360.pth --out decay.png
"""
import argparse
import glob
import math
from pathlib import Path

import numpy as np
import torch

from mmvitmix.apis import (add_min_coverage_argument, check_file,
                           check_output_file)
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils import DEFAULT_MIN_COVERAGE, check_min_coverage

ROOT = Path(__file__).resolve().parents[2]

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def decay_maps(log_decay: float, height: int, width: int, qy: int, qx: int):
    """(whole, w_pass, h_pass) maps of shape (H, W) for one head."""
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    dy = np.abs(ys - qy)
    dx = np.abs(xs - qx)
    whole = np.exp(log_decay * (dy + dx))
    w_pass = np.zeros((height, width))
    w_pass[qy, :] = np.exp(log_decay * dx[0])
    h_pass = np.zeros((height, width))
    h_pass[:, qx] = np.exp(log_decay * dy[:, 0])
    return whole, w_pass, h_pass


def build_backbone(arch: str,
                   stage: int,
                   checkpoint=None,
                   backend=None,
                   min_coverage: float = DEFAULT_MIN_COVERAGE):
    """mmvitmix RMT returning stage ``stage`` (eval mode), loaded from
    ``checkpoint`` if given (the backbones' Pretrained rule: official or
    converted layout, or a whole model's ``backbone.`` keys; at least
    ``min_coverage`` of the parameters). Returns (model, message)."""
    from mmvitmix.models.backbones.rmt import RMT
    from mmvitmix.models.converters import unwrap_state_dict
    from mmvitmix.utils import read_checkpoint
    # the stage itself, without a detector's output norm (the channel sum
    # of a LayerNorm output is constant: its ERF would vanish)
    kwargs = dict(arch=arch, out_indices=(stage, ), drop_path_rate=0.,
                  out_norm_cfg=None)
    if backend:
        kwargs['attn_backend'] = backend
    model = RMT(**kwargs)
    message = 'random init (no checkpoint)'
    if checkpoint:
        ckpt = read_checkpoint(checkpoint)
        state = unwrap_state_dict(ckpt) if isinstance(ckpt, dict) else ckpt
        whole = isinstance(state, dict) and any(
            k.startswith('backbone.') for k in state)
        report = model.load_pretrained(
            ckpt,
            prefix='backbone.' if whole else None,
            min_coverage=min_coverage,
            source=checkpoint,
            opt_in='pass --min-coverage {share}')
        missing, unexpected = report['missing'], report['unexpected']
        message = (f'{checkpoint}: {len(missing)} missing, '
                   f'{len(unexpected)} unexpected keys')
        if missing:
            message += f'; missing e.g. {missing[:3]}'
        if unexpected:
            message += f'; unexpected e.g. {unexpected[:3]}'
    return model.eval(), message


def load_image(path, size):
    from PIL import Image
    img = Image.open(path).convert('RGB').resize((size, size),
                                                 Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    norm = (arr - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return arr.astype(np.uint8), torch.from_numpy(norm).permute(2, 0,
                                                               1)[None]


def effective_receptive_field(model, image: torch.Tensor) -> np.ndarray:
    """``Σ_c |∂ Σ_c' y[c', centre] / ∂x[c]|`` over the input (H, W)."""
    x = image.clone().requires_grad_(True)
    out = model(x)[-1]
    _, _, height, width = out.shape
    out[:, :, height // 2, width // 2].sum().backward()
    return x.grad.abs().sum((0, 1)).numpy()


def default_image():
    found = sorted(glob.glob(str(ROOT / 'data/demo/coco/val/*.jpg')))
    found = found or sorted(glob.glob(str(ROOT / 'data/demo/**/*.jpg'),
                                      recursive=True))
    return found[0] if found else None


def render(args):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    model, message = build_backbone(args.arch, args.stage, args.checkpoint,
                                    args.backend, args.min_coverage)
    stage = model.stages[args.stage]
    log_decay = stage.rel_pos.log_decay.detach().double()
    heads = log_decay.numel()
    if not 0 <= args.head < heads:
        raise ToolError(f'stage {args.stage} has {heads} heads; --head must '
                        f'be in 0..{heads - 1}, got {args.head}')
    decomposed = bool(model.arch['chunkwise_recurrents'][args.stage])
    grid = args.grid or args.size // (4 * 2**args.stage)
    qy, qx = (args.query if args.query else (grid // 2, grid // 2))
    if not (0 <= qy < grid and 0 <= qx < grid):
        raise ToolError(f'--query {qy} {qx} is outside the {grid}x{grid} '
                        f'token grid; each must be in 0..{grid - 1}')
    gamma = math.exp(float(log_decay[args.head]))
    whole, w_pass, h_pass = decay_maps(
        float(log_decay[args.head]), grid, grid, qy, qx)

    panels = 3 if args.erf else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2))
    axes[0].imshow(whole, cmap='viridis', vmin=0, vmax=1)
    axes[0].set_title('whole ReSA: $\\gamma^{|\\Delta y|+|\\Delta x|}$')
    cross = np.maximum(w_pass, h_pass)
    axes[1].imshow(cross, cmap='viridis', vmin=0, vmax=1)
    axes[1].set_title('decomposed: W pass (row), H pass (column)')
    for ax in axes[:2]:
        ax.plot(qx, qy, 'r+', markersize=12)
        ax.set_xlabel('x (tokens)')
        ax.set_ylabel('y (tokens)')
    if args.erf:
        image_path = args.image or default_image()
        if image_path is None:
            raise ToolError('--erf needs --image (no demo image found)')
        rgb, tensor = load_image(image_path, args.size)
        erf = effective_receptive_field(model, tensor)
        axes[2].imshow(rgb)
        axes[2].imshow(np.log1p(erf / (erf.max() + 1e-12) * 1e3),
                       cmap='magma', alpha=0.7)
        axes[2].set_title(f'ERF of stage {args.stage} (centre output)')
        axes[2].axis('off')
    fig.suptitle(
        f'RMT-{args.arch.upper()} stage {args.stage} '
        f'({"decomposed" if decomposed else "whole"} in this arch), head '
        f'{args.head}/{heads}: γ = {gamma:.4f}; {message}',
        fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f'wrote {args.out} (stage {args.stage}, head {args.head}, '
          f'γ={gamma:.6f}; {message})')
    return args.out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--arch', default='t', help="RMT arch (t/s/b/l)")
    parser.add_argument('--stage', type=int, default=0, help='0..3')
    parser.add_argument('--head', type=int, default=0)
    parser.add_argument('--checkpoint', help='backbone / detector / '
                        'official RMT checkpoint (default: random init)')
    parser.add_argument('--size', type=int, default=224,
                        help='input side in pixels (sets the token grid)')
    parser.add_argument('--grid', type=int,
                        help='token grid side of the decay maps (default: '
                        'the stage\'s grid at --size)')
    parser.add_argument('--query', type=int, nargs=2, metavar=('Y', 'X'),
                        help='query token (default: the centre)')
    parser.add_argument('--erf', action='store_true',
                        help='add the effective receptive field panel')
    parser.add_argument('--image', help='image for --erf (default: the '
                        'first bundled demo image)')
    parser.add_argument('--backend', help='attention backend for --erf '
                        '(needs backward: not flex on CPU)')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--out', default='decay.png')
    add_min_coverage_argument(parser)
    args = parser.parse_args(argv)
    check_args(args)
    return render(args)


#: what --out may end in (matplotlib picks the format from it)
OUT_SUFFIXES = ('.png', '.jpg', '.jpeg', '.pdf', '.svg')


def check_args(args) -> None:
    """Everything the user gave, before a model is built (ToolError)."""
    from mmvitmix.models.backbones.rmt import RMT
    archs = sorted(RMT.arch_settings)
    if args.arch.lower() not in archs:
        raise ToolError(f'--arch {args.arch!r} is not an RMT arch; accepted: '
                        f'{archs}')
    if not 0 <= args.stage <= 3:
        raise ToolError(f'--stage must be in 0..3, got {args.stage}')
    if args.head < 0:
        raise ToolError(f'--head must be an int >= 0, got {args.head}')
    if args.size < 32:
        raise ToolError(f'--size must be at least 32 pixels (the total stride '
                        f'of RMT), got {args.size}')
    if args.grid is not None and args.grid < 1:
        raise ToolError(f'--grid must be an int >= 1, got {args.grid}')
    if args.dpi < 1:
        raise ToolError(f'--dpi must be an int >= 1, got {args.dpi}')
    if args.checkpoint is not None:
        check_file(args.checkpoint, '--checkpoint')
    if args.image is not None:
        check_file(args.image, '--image')
    check_output_file(args.out, '--out', OUT_SUFFIXES,
                      inputs=[args.checkpoint, args.image])
    check_min_coverage(args.min_coverage, '--min-coverage')


if __name__ == '__main__':
    run(main)
