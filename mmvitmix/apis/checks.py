"""Argument checks the command-line tools run before any heavy work.

Each check raises :class:`~mmvitmix.apis.cli.ToolError` with a message
that names the argument, the problem and what is accepted; the tools'
:func:`~mmvitmix.apis.cli.run` prints it as one ``error:`` line (exit 1).
Checkpoints go through one rule (:func:`check_checkpoint_fits`,
:func:`mmvitmix.utils.check_coverage`) with the ``--min-coverage`` flag
(:func:`add_min_coverage_argument`).
"""
import argparse
from typing import Iterable, Optional, Sequence

from mmvitmix.utils.checkpoint import (DEFAULT_MIN_COVERAGE, check_coverage,
                                       check_min_coverage, model_state_dict,
                                       read_checkpoint)
from .cli import (MIN_SIDE, existing_file, output_dir, output_file,
                  positive_shape)


def add_min_coverage_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--min-coverage X`` (checked by :func:`check_min_coverage`)."""
    parser.add_argument(
        '--min-coverage',
        type=float,
        default=DEFAULT_MIN_COVERAGE,
        metavar='X',
        help='refuse a checkpoint that provides less than this share (0..1) '
        "of the model's parameters, counted by element, with matching "
        f'shapes (default {DEFAULT_MIN_COVERAGE:g}); lower it to load a '
        'partial checkpoint on purpose')


def check_file(path: str, what: str) -> str:
    """``path`` if it is a readable file, else a ToolError naming ``what``
    (:func:`~mmvitmix.apis.cli.existing_file`)."""
    existing_file(what, path)
    return path


def check_config(path: str) -> str:
    """A config argument: an existing, readable ``.py`` file."""
    existing_file('config file', path, ('.py', ))
    return path


def check_output_file(path: str,
                      what: str,
                      suffixes: Sequence[str] = (),
                      inputs: Iterable[str] = ()) -> str:
    """An output file (:func:`~mmvitmix.apis.cli.output_file`): not a
    folder, not one of ``inputs``, with one of ``suffixes`` when given.
    Nothing is created here."""
    output_file(what, path, suffixes, inputs)
    return path


def check_output_dir(path: str, what: str) -> str:
    """An output folder (:func:`~mmvitmix.apis.cli.output_dir`). Nothing is
    created here."""
    output_dir(what, path)
    return path


def check_shape(shape: Optional[Sequence[int]],
                minimum: int = MIN_SIDE,
                what: str = '--shape',
                lengths: Sequence[int] = (2, )) -> Optional[tuple]:
    """An image size ``H W`` (or ``S`` when 1 is in ``lengths``), each side
    at least ``minimum`` (:func:`~mmvitmix.apis.cli.positive_shape`); None
    passes."""
    if shape is None:
        return None
    return positive_shape(what, list(shape), minimum, tuple(lengths))


def unwrap_model(model):
    """The model inside a DDP / mmengine wrapper."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def check_checkpoint_fits(model,
                          checkpoint: str,
                          min_coverage: float = DEFAULT_MIN_COVERAGE,
                          what: str = 'model',
                          ckpt=None):
    """Read ``checkpoint`` and check it against the whole ``model`` with the
    one rule (:func:`mmvitmix.utils.check_coverage`) before anything loads
    it; return what the file holds.

    Args:
        model: the model; it may be wrapped (DDP) or live on the meta
            device (only names and shapes are compared).
        checkpoint (str): the file or URL, named in the messages.
        min_coverage (float): ``--min-coverage``.
        what (str): what the model is called in the messages.
        ckpt: the file's content when already read (not read again).
    """
    check_min_coverage(min_coverage, '--min-coverage')
    if ckpt is None:
        ckpt = read_checkpoint(checkpoint)
    state = model_state_dict(ckpt, f'checkpoint {checkpoint!r}')
    check_coverage(unwrap_model(model), state, checkpoint, min_coverage,
                   what=what)
    return ckpt


def check_config_checkpoint(cfg,
                            checkpoint: str,
                            min_coverage: float = DEFAULT_MIN_COVERAGE):
    """:func:`check_checkpoint_fits` against the model of ``cfg`` (a loaded
    config, :func:`~mmvitmix.apis.load_config`), built on the meta device:
    before a Runner exists, so a refused file leaves nothing written (no
    work_dir, no log)."""
    model = build_model_shapes(cfg.model, cfg.default_scope)
    return check_checkpoint_fits(model, checkpoint, min_coverage)


def build_model_shapes(model_cfg, scope: str):
    """The model of ``model_cfg`` built for its parameter names and shapes
    only: on the meta device (no memory, no initialisation), or on the CPU
    when a module cannot be built there."""
    import copy

    import torch
    from mmengine.registry import MODELS, DefaultScope
    model_cfg = copy.deepcopy(model_cfg)
    backbone = model_cfg.get('backbone')
    if isinstance(backbone, dict):
        backbone.pop('init_cfg', None)  # nothing downloaded for a check
    with DefaultScope.overwrite_default_scope(scope):
        try:
            with torch.device('meta'):
                return MODELS.build(model_cfg)
        except Exception:  # noqa: BLE001  a module computing at build time
            return MODELS.build(model_cfg)
