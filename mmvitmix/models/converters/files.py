"""Converting an official checkpoint file, and the shared command line of
``tools/model_converters/<arch>2mmvitmix.py``.

Each converter script is a few lines::

    from mmvitmix.models.converters import main
    from mmvitmix.models.backbones.rmt import convert_rmt

    if __name__ == '__main__':
        main(convert_rmt, 'Convert an official RMT checkpoint to mmvitmix.')

:func:`main` reads ``SRC`` (an official release file, wrapped in ``model``
or ``state_dict`` or flat), runs the backbone's pure converter, and writes
``{'state_dict': converted, 'meta': {...}}`` to ``DST`` (atomically: a
temporary file renamed at the end; ``DST`` may not be ``SRC``), which
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` or mmengine's
``load_checkpoint`` read directly. It prints how many keys were converted and
which source keys were dropped (classification heads, on purpose).
"""
import argparse
import os.path as osp
import pickle
import sys
from typing import Callable, Dict, List, Optional

import torch

from mmvitmix.utils import check_output_path, save_checkpoint_atomic
from .engine import unwrap_state_dict


def load_source(path: str, allow_pickle: bool = False) -> dict:
    """Load a checkpoint on CPU.

    Tensors-only files load with ``weights_only=True``. Files that also
    pickle Python objects (e.g. the training ``args`` Namespace some official
    releases carry) need ``allow_pickle=True``; use it only for files you
    trust, since unpickling can run code.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'source checkpoint {path!r} does not exist')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise SystemExit(
                f'error: {path} holds pickled Python objects besides tensors '
                f'(torch.load with weights_only=True refused it: '
                f'{str(exc).splitlines()[0]}). If you trust the file, run '
                'again with --allow-pickle.') from exc
    return torch.load(path, map_location='cpu', weights_only=False)


def convert_file(src: str,
                 dst: str,
                 convert_fn: Callable[[Dict[str, torch.Tensor]], dict],
                 allow_pickle: bool = False) -> dict:
    """Convert ``src`` into ``dst``; return a summary dict.

    Returns:
        dict: ``converted`` (number of keys written), ``dropped`` (sorted
        source keys whose tensors no output tensor shares storage with) and
        ``dst``.
    """
    check_output_path(dst, [src])
    ckpt = load_source(src, allow_pickle=allow_pickle)
    state = unwrap_state_dict(ckpt)
    converted = convert_fn(state)
    if not converted:
        raise ValueError(f'{convert_fn.__name__} produced no key from {src}')
    # a source tensor counts as dropped when no output tensor shares its
    # storage: renames and views (reshape, chunk) keep it, discarded
    # classifier weights do not
    kept = {
        v.untyped_storage().data_ptr()
        for v in converted.values() if isinstance(v, torch.Tensor)
    }
    dropped: List[str] = sorted(
        k for k, v in state.items() if isinstance(v, torch.Tensor)
        and v.numel() > 0 and v.untyped_storage().data_ptr() not in kept)
    meta = dict(
        source=osp.abspath(src),
        converter=f'{convert_fn.__module__}.{convert_fn.__name__}',
        num_source_keys=len(state),
        num_converted_keys=len(converted),
        dropped_keys=dropped)
    # a temporary file renamed at the end: an interrupted run never leaves
    # a half-written checkpoint under the target name
    out_path = save_checkpoint_atomic({'state_dict': converted, 'meta': meta},
                                      dst, inputs=[src])
    return dict(converted=len(converted), dropped=dropped, dst=str(out_path))


def main(convert_fn: Callable[[Dict[str, torch.Tensor]], dict],
         description: str,
         argv: Optional[List[str]] = None) -> dict:
    """Command line ``SRC DST [--allow-pickle]`` around ``convert_fn``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument(
        'dst', help='output file (parent folders are created)')
    parser.add_argument(
        '--allow-pickle',
        action='store_true',
        help='load SRC with weights_only=False; only for trusted files that '
        'pickle Python objects besides tensors')
    args = parser.parse_args(argv)
    summary = convert_file(
        args.src, args.dst, convert_fn, allow_pickle=args.allow_pickle)
    print(f'converted {summary["converted"]} keys, dropped '
          f'{len(summary["dropped"])} keys -> {summary["dst"]}')
    if summary['dropped']:
        shown = summary['dropped'][:20]
        more = len(summary['dropped']) - len(shown)
        print('dropped: ' + ', '.join(shown) +
              (f' ... and {more} more' if more else ''))
    sys.stdout.flush()
    return summary
