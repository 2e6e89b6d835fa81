"""Checkpoint loading helpers."""
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
