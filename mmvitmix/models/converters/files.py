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
``load_checkpoint`` read directly. It prints what the source is (family,
layout, the ``arch`` it fits), how many keys were converted and which source
keys were dropped (classification heads, on purpose). A source of another
family (official or already converted), an unreadable file or a missing one
is refused in one line naming it, and nothing is written.
"""
import argparse
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional

import torch

from mmvitmix.utils import check_output_path, save_checkpoint_atomic
from .engine import unwrap_state_dict
from .identify import (CONVERTER_FAMILIES, CheckpointIdentity,
                       check_checkpoint_family)


def reading_error_detail(exc: BaseException) -> str:
    """``ExcType: the line that says what went wrong`` for an exception
    raised while reading a checkpoint (torch's weights-only refusal is many
    lines of advice around one line of cause)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = next((ln for ln in lines if 'Unsupported' in ln), None)
    if cause is None and 'WeightsUnpickler error:' in text:
        after = text.split('WeightsUnpickler error:', 1)[1].strip()
        cause = after.splitlines()[0].strip() if after else None
    if cause is None and lines:
        cause = lines[0]
    if cause and 'Unsupported global' in cause:
        # torch's advice after the class name does not apply here
        cause = cause.split(' was not an allowed global')[0]
    if cause and len(cause) > 200:
        cause = cause[:200] + ' ...'
    return type(exc).__name__ + (f': {cause}' if cause else '')


def _unreadable(path: str, exc: BaseException):
    from mmvitmix.apis.cli import ToolError
    return ToolError(f'cannot read source checkpoint {path!r}: not a PyTorch '
                     f'checkpoint file, or a damaged one '
                     f'({reading_error_detail(exc)})')


def load_source(path: str, allow_pickle: bool = False) -> dict:
    """Load a checkpoint on CPU.

    Tensors-only files load with ``weights_only=True``. Files that also
    pickle Python objects (e.g. the training ``args`` Namespace some official
    releases carry) need ``allow_pickle=True``; use it only for files you
    trust, since unpickling can run code.

    Raises:
        ToolError: (a ``ValueError``) ``path`` does not exist or is not a
            file; it cannot be read as a checkpoint (whatever torch raised
            while reading it: random bytes give ``UnpicklingError``,
            ``IndexError``, ``KeyError``, ...); it pickles Python objects
            and ``allow_pickle`` is off; it does not hold a dict.
    """
    from mmvitmix.apis.cli import ToolError
    if not osp.exists(path):
        raise ToolError(f'source checkpoint {path!r} does not exist')
    if not osp.isfile(path):
        raise ToolError(f'source checkpoint {path!r} is not a file')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # whatever the unpickler raises
        if 'Unsupported global' not in str(exc):
            raise _unreadable(path, exc) from exc
        if not allow_pickle:
            unsupported = next(ln.strip() for ln in str(exc).splitlines()
                               if 'Unsupported global' in ln)
            raise ToolError(
                f'{path} holds pickled Python objects besides tensors '
                f'(torch.load with weights_only=True refused it: '
                f'{unsupported}). If you trust the file, run again with '
                '--allow-pickle.') from exc
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        except Exception as exc2:
            raise _unreadable(path, exc2) from exc2
    if not isinstance(ckpt, dict):
        raise ToolError(f'source checkpoint {path!r} holds a '
                        f'{type(ckpt).__name__}, not a checkpoint (a dict '
                        'of tensors)')
    return ckpt


def check_source_family(src: str, state: dict,
                        accepted) -> 'CheckpointIdentity':
    """Refuse (``ToolError``) a source of another family than ``accepted``
    (family names of :data:`~.identify.FAMILIES`), or of none known; say
    what it is and which converter takes it."""
    from mmvitmix.apis.cli import ToolError
    return check_checkpoint_family(None, tuple(accepted), state, src,
                                   error=ToolError)


def convert_file(src: str,
                 dst: str,
                 convert_fn: Callable[[Dict[str, torch.Tensor]], dict],
                 allow_pickle: bool = False) -> dict:
    """Convert ``src`` into ``dst``; return a summary dict.

    The source must be of the family ``convert_fn`` converts (in the
    official or in mmvitmix's layout; :func:`~.identify.identify`):
    another family's file is refused by name (``ToolError``), with the
    converter that takes it, and nothing is written.

    Returns:
        dict: ``converted`` (number of keys written), ``dropped`` (sorted
        source keys whose tensors no output tensor shares storage with),
        ``dst`` and ``source`` (what the file is, in words).
    """
    check_output_path(dst, [src])
    ckpt = load_source(src, allow_pickle=allow_pickle)
    state = unwrap_state_dict(ckpt)
    accepted = CONVERTER_FAMILIES.get(getattr(convert_fn, '__name__', ''))
    found = (check_source_family(src, state, accepted)
             if accepted is not None else None)
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
    return dict(converted=len(converted), dropped=dropped, dst=str(out_path),
                source=found.describe() if found is not None else None)


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
    if summary.get('source'):
        print(f'source: {summary["source"]}')
    print(f'converted {summary["converted"]} keys, dropped '
          f'{len(summary["dropped"])} keys -> {summary["dst"]}')
    if summary['dropped']:
        shown = summary['dropped'][:20]
        more = len(summary['dropped']) - len(shown)
        print('dropped: ' + ', '.join(shown) +
              (f' ... and {more} more' if more else ''))
    sys.stdout.flush()
    return summary
