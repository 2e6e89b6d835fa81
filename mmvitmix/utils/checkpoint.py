"""Checkpoint helpers: reading a file, the coverage rule for loading it into
a model, loading mmengine files, atomic saving, damage checks.

The rule, shared by the backbones' ``init_cfg=dict(type='Pretrained')`` and
every tool that loads a checkpoint (:func:`check_coverage`): count the
parameters of the model (by element) that the file provides under the same
name and with the same shape; refuse a file that provides none, whatever
the threshold, and one that provides less than ``min_coverage`` (default
:data:`DEFAULT_MIN_COVERAGE`), naming the file, the share, the first missing
and unexpected keys and the size mismatches with both shapes.
"""
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

# mmvitmix.apis.cli is a leaf (no torch, no mmengine): every layer raises
# its ToolError, which the tools print as one line
from mmvitmix.apis.cli import ToolError

#: share of a model's parameters (by element count) that a checkpoint must
#: provide, with matching shapes, unless the user lowers ``min_coverage``
#: (``init_cfg``) or ``--min-coverage`` (the tools)
DEFAULT_MIN_COVERAGE = 0.9
#: how many keys of each kind a refusal names
_SHOW_MISSING = 8
_SHOW_UNEXPECTED = 5
_SHOW_MISMATCHED = 3


class CheckpointError(ToolError):
    """A checkpoint that cannot be read, or that does not fit the model.

    The message names the file and what is wrong with it.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (also a ``FileNotFoundError``)."""


def _describe(state: Mapping) -> Optional[str]:
    """Which family / architecture ``state`` is a checkpoint of, e.g.
    ``"an RMT checkpoint (official layout) that fits type='RMT', arch='t'"``;
    None when unknown or when identification fails (it never hides a
    refusal).

    ``mmvitmix.models.converters.describe_checkpoint`` knows; the converters
    live above this module, so it is looked up only when a refusal is being
    worded and only if ``mmvitmix.models`` is already imported (every caller
    that builds a model has imported it).
    """
    import sys
    converters = sys.modules.get('mmvitmix.models.converters')
    if converters is None:
        return None
    try:
        return converters.describe_checkpoint(dict(state))
    except Exception:  # noqa: BLE001  a description is a bonus
        return None


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ''
    text = text if len(text) <= limit else text[:limit] + '...'
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def read_checkpoint(path: str, map_location='cpu'):
    """Read a checkpoint file (or URL) and return what it holds.

    Local files are read with mmengine's ``CheckpointLoader`` (so are URLs
    and the other schemes it knows, e.g. ``open-mmlab://``), mmengine's own
    pickled objects allowed (:func:`allow_mmengine_checkpoints`).

    Raises:
        CheckpointError: naming the file, when it is a folder, is empty
            or cannot be read; whatever the unpickler raises on a file that
            is not a PyTorch checkpoint (random bytes give
            ``UnpicklingError``, ``EOFError``, ``IndexError``,
            ``RuntimeError``, ...) becomes "cannot read checkpoint" with
            its reason. A missing file: :class:`CheckpointNotFoundError`.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f'checkpoint must be a path or URL, got '
                              f'{type(path).__name__}')
    path = os.fspath(path)
    remote = '://' in path
    if not remote:
        local = os.path.expanduser(path)
        if not os.path.exists(local):
            raise CheckpointNotFoundError(
                f'checkpoint {path!r} does not exist')
        if os.path.isdir(local):
            raise CheckpointError(f'checkpoint {path!r} is a folder, not a '
                                  'checkpoint file')
        if not os.access(local, os.R_OK):
            raise CheckpointError(f'checkpoint {path!r} cannot be read '
                                  '(permission denied)')
        if os.path.getsize(local) == 0:
            raise CheckpointError(f'cannot read checkpoint {path!r}: it is '
                                  'empty (0 bytes), not a PyTorch checkpoint '
                                  'file')
        path = local
    allow_mmengine_checkpoints()
    try:
        return CheckpointLoader.load_checkpoint(
            path, map_location=map_location, logger='current')
    except Exception as exc:  # whatever the reader raises: one message
        raise CheckpointError(_unreadable(path, exc, remote)) from exc


def _unreadable(path: str, exc: BaseException, remote: bool) -> str:
    """Why ``path`` could not be read, in one sentence."""
    text = str(exc)
    # torch's weights-only unpickler: its own reason is on one line of a
    # long, generic explanation
    found = re.search(r'WeightsUnpickler error:\s*([^\n]*)', text)
    cause = found.group(1).strip() if found else None
    if cause and 'Unsupported global' in cause:
        # torch's advice after the class name does not apply here
        cause = cause.split(' was not an allowed global')[0]
        what = ('it pickles Python objects besides tensors, which '
                'torch.load(weights_only=True) refuses; if you trust the '
                'file, convert it once with tools/model_converters/'
                '<family>2mmvitmix.py --allow-pickle')
    elif remote:
        what = 'the download or the file failed'
    else:
        what = 'not a PyTorch checkpoint file, or a damaged one'
    detail = (f'{type(exc).__name__}: {cause[:300]}' if cause else
              _first_line(exc))
    return f'cannot read checkpoint {path!r}: {what} ({detail})'


def model_state_dict(ckpt, source: str = 'the checkpoint') -> dict:
    """The state dict that mmengine's ``load_checkpoint`` loads into a whole
    model from ``ckpt``: ``ckpt['state_dict']`` when present, else ``ckpt``,
    with the ``module.`` prefix of a DDP-wrapped model removed."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{source} holds a {type(ckpt).__name__}, not '
                              'a dict of tensors (a state dict)')
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: its 'state_dict' is a "
                              f'{type(state).__name__}, not a dict')
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


@dataclass
class Coverage:
    """What a state dict provides of a model (:func:`measure_coverage`)."""
    #: share of the counted parameter elements provided, with their shapes
    share: float
    #: parameter elements counted / provided
    total: int
    loaded: int
    #: parameter tensors counted
    num_params: int
    #: counted parameters the state does not provide (absent or mismatched)
    missing: List[str] = field(default_factory=list)
    #: (key, shape in the file, shape in the model) of state-dict entries
    #: (parameters and buffers) present in both with different shapes
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    #: keys of the state that the model's state dict does not have
    unexpected: List[str] = field(default_factory=list)


def _shape(value) -> Optional[tuple]:
    shape = getattr(value, 'shape', None)
    return tuple(shape) if shape is not None else None


def measure_coverage(model: nn.Module,
                     state: Mapping,
                     ignore: Iterable[str] = ()) -> Coverage:
    """Share of ``model``'s parameters (by element) that ``state`` provides
    under the same key with the same shape; parameters in ``ignore`` (e.g.
    a backbone's output norms, absent from ImageNet files) not counted.

    The model may live on the ``meta`` device: only names and shapes are
    read.
    """
    ignore = set(ignore)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mismatched = [(k, _shape(v), expected[k]) for k, v in state.items()
                  if k in expected and _shape(v) != expected[k]]
    bad = {k for k, _, _ in mismatched}
    params = [(k, p.numel()) for k, p in model.named_parameters()
              if k not in ignore]
    total = sum(n for _, n in params)
    provided = [(k, n) for k, n in params if k in state and k not in bad]
    loaded = sum(n for _, n in provided)
    have = {k for k, _ in provided}
    return Coverage(
        share=loaded / total if total else 1.0,
        total=total,
        loaded=loaded,
        num_params=len(params),
        missing=[k for k, _ in params if k not in have],
        mismatched=mismatched,
        unexpected=[k for k in state if k not in expected])


def _names(keys: Sequence[str], limit: int) -> str:
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'{list(keys[:limit])}{more}'


def _details(cov: Coverage) -> str:
    parts = []
    if cov.unexpected:
        parts.append(f'{len(cov.unexpected)} keys not in the model, e.g. '
                     f'{_names(cov.unexpected, _SHOW_UNEXPECTED)}')
    if cov.mismatched:
        shown = ', '.join(
            f'{k}: {tuple(a) if a is not None else "not a tensor"} in the '
            f'file, {tuple(b)} in the model'
            for k, a, b in cov.mismatched[:_SHOW_MISMATCHED])
        more = (f' and {len(cov.mismatched) - _SHOW_MISMATCHED} more'
                if len(cov.mismatched) > _SHOW_MISMATCHED else '')
        parts.append(f'{len(cov.mismatched)} size mismatches ({shown}{more})')
    return ''.join(f'; {p}' for p in parts)


def check_min_coverage(value, owner: str = 'min_coverage') -> float:
    """``value`` if it is a number in [0, 1], else a :class:`ToolError`
    naming ``owner`` and the accepted range."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value <= 1):
        raise ToolError(f'{owner} must be a number in [0, 1] (the share of '
                        "the model's parameters a checkpoint must provide; "
                        f'default {DEFAULT_MIN_COVERAGE:g}), got {value!r}')
    return float(value)


def _share_floor(share: float) -> str:
    """``share`` rounded down to two significant decimals, never to 0: a
    threshold the share itself passes (0.75 for 0.7583, 0.0037 for 0.00371).
    """
    decimals = 2
    if 0 < share < 0.01:
        decimals = 1 - math.floor(math.log10(share))
    scale = 10**decimals
    return f'{math.floor(share * scale) / scale:.{decimals}f}'


def check_coverage(model: nn.Module,
                   state: Mapping,
                   source: str,
                   min_coverage: float = DEFAULT_MIN_COVERAGE,
                   *,
                   owner: Optional[str] = None,
                   what: str = 'model',
                   ignore: Iterable[str] = (),
                   opt_in: str = 'pass --min-coverage {share}',
                   file_state: Optional[Mapping] = None) -> Coverage:
    """The one rule for loading ``state`` into ``model``.

    Args:
        model: the model (or backbone) the state is for.
        state: the flat state dict that would be loaded.
        source: the file (or a description) named in the messages.
        min_coverage: the smallest share accepted, in [0, 1].
        owner: who speaks in the messages (default: the model's class).
        what: what the model is called in the messages ('model',
            'backbone').
        ignore: parameter keys not counted (see :func:`measure_coverage`).
        opt_in: how to accept a partial load, with ``{share}`` for the
            share rounded down to two decimals (two significant ones
            below 0.01).
        file_state: the state as the file holds it, for
            :func:`_describe` (default ``state``).

    Returns:
        Coverage: the measurement, when the state is accepted.

    Raises:
        CheckpointError: no parameter provided (whatever ``min_coverage``),
            or less than ``min_coverage`` of them.
    """
    owner = owner or type(model).__name__
    cov = measure_coverage(model, state, ignore)
    described = _describe(file_state if file_state is not None else state)
    is_text = f'; the file is {described}' if described else ''
    if cov.loaded == 0 and cov.total > 0:
        raise CheckpointError(
            f'{owner}: no parameter of the {what} could be loaded from '
            f'{source} ({len(state)} keys, none of them a parameter of '
            f'{owner} with its shape); is it a checkpoint of this {what}? '
            f'Missing: {_names(cov.missing, _SHOW_MISSING)}'
            f'{_details(cov)}{is_text}')
    if cov.share < min_coverage:
        share = _share_floor(cov.share)
        raise CheckpointError(
            f'{owner}: {source} provides {cov.share:.1%} of the {what}\'s '
            f'parameters ({len(cov.missing)} of {cov.num_params} tensors '
            f'missing: {_names(cov.missing, _SHOW_MISSING)}'
            f'{_details(cov)}), below min_coverage={min_coverage:g}'
            f'{is_text}. If a partial load is intended, '
            + opt_in.format(share=share))
    return cov


def load_checked(model: nn.Module,
                 checkpoint,
                 min_coverage: float = DEFAULT_MIN_COVERAGE,
                 source: Optional[str] = None,
                 map_location='cpu'):
    """Read ``checkpoint`` (a path / URL, or what :func:`read_checkpoint`
    returned), check it against the whole ``model`` (:func:`check_coverage`)
    and load it as mmengine's ``load_checkpoint(strict=False)`` does
    (missing, unexpected and mismatched keys logged).

    Returns:
        The checkpoint as read (its ``meta`` etc. for the caller).
    """
    from mmengine.runner.checkpoint import load_state_dict
    if isinstance(checkpoint, (str, os.PathLike)):
        source = source or os.fspath(checkpoint)
        checkpoint = read_checkpoint(checkpoint, map_location)
    source = source or 'the checkpoint'
    state = model_state_dict(checkpoint, source)
    check_coverage(model, state, source, min_coverage)
    load_state_dict(model, state, strict=False, logger='current')
    return checkpoint


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine's own checkpoints.

    Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and
    mmengine 0.10's ``CheckpointLoader`` does not say otherwise, so resuming
    or testing a checkpoint that mmengine wrote fails: its ``message_hub``
    pickles ``HistoryBuffer`` objects (with method references, i.e.
    ``getattr``) and numpy arrays. This allow-lists exactly those globals for
    this process, instead of turning the weights-only check off for every
    file (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) or for downloaded weights.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 loads everything anyway
        return
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        multiarray = np._core.multiarray  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        multiarray = np.core.multiarray
    dtype_classes = [
        cls for cls in vars(getattr(np, 'dtypes', object)).values()
        if isinstance(cls, type) and issubclass(cls, np.dtype)
    ]
    add_safe_globals([
        HistoryBuffer, getattr, multiarray._reconstruct, multiarray.scalar,
        np.ndarray, np.dtype, *dtype_classes
    ])


def check_output_path(dst: str, inputs: Iterable[str] = ()) -> Path:
    """Refuse an output path that is one of the tool's inputs.

    A converter or the re-parameterisation tool writing over its own input
    would destroy the only copy of the source if anything failed half-way.

    Returns:
        Path: ``dst``.

    Raises:
        ValueError: ``dst`` is (or links to) one of ``inputs``, or is a
            folder.
    """
    out = Path(dst)
    if out.is_dir():
        raise ValueError(f'output path {dst!r} is a folder; give a file '
                         f'name, e.g. {dst}/model.pth')
    for src in inputs:
        if src is None:
            continue
        same = (out.exists() and Path(src).exists()
                and os.path.samefile(out, src))
        if same or out.resolve() == Path(src).resolve():
            raise ValueError(
                f'output path {dst!r} is the input file {src!r}: refusing '
                'to overwrite the input; write to a new file')
    return out


def save_checkpoint_atomic(obj, dst: str, inputs: Iterable[str] = ()) -> Path:
    """``torch.save(obj, dst)`` that never leaves a half-written ``dst``.

    The checkpoint is written to a temporary file in ``dst``'s folder,
    flushed to disk, then renamed over ``dst`` (atomic on POSIX): an
    interrupted run leaves either the old file or none under the target
    name, and at worst a ``.<name>.*.part`` file, which is removed when the
    failure is a Python exception. Parent folders are created.

    Args:
        obj: what to save.
        dst (str): the target file.
        inputs (Iterable[str]): the tool's input files; ``dst`` may not be
            one of them (:func:`check_output_path`).
    """
    out = check_output_path(dst, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{out.name}.', suffix='.part', dir=out.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def checkpoint_damage(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as a checkpoint, or None if it can.

    Reads the whole file with ``torch.load`` (on the CPU, mmengine's pickled
    objects allowed as in :func:`allow_mmengine_checkpoints`), so a file
    truncated by a crash while saving is found before a run resumes from it.
    """
    if not os.path.isfile(path):
        return 'the file does not exist'
    if os.path.getsize(path) == 0:
        return 'the file is empty (0 bytes)'
    allow_mmengine_checkpoints()
    try:
        torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # any reader error means unusable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f'{type(exc).__name__}: {first}'
    return None
