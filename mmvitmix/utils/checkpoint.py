"""Checkpoint helpers: loading mmengine files, atomic saving, damage checks."""
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import torch


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
