"""Argument checks the command-line tools run before any heavy work.

Each check raises :class:`~mmvitmix.apis.cli.ToolError` with a message
that names the argument, the problem and what is accepted; the tools'
:func:`~mmvitmix.apis.cli.run` prints it as one ``error:`` line (exit 1).
Checkpoints go through one rule (:func:`check_checkpoint_fits`,
:func:`mmvitmix.utils.check_coverage`) with the ``--min-coverage`` flag
(:func:`add_min_coverage_argument`).
"""
import argparse
import os
import os.path as osp
from typing import Iterable, Optional, Sequence

from mmvitmix.utils.checkpoint import (DEFAULT_MIN_COVERAGE, check_coverage,
                                       check_min_coverage, model_state_dict,
                                       read_checkpoint)
from .cli import ToolError

#: the smallest image side every backbone takes: the total stride of four
#: stages (Container-Light: the product of its patch sizes, also 32)
MIN_INPUT_SIZE = 32


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
    """``path`` if it is a readable file, else a ToolError naming ``what``."""
    if not osp.exists(path):
        raise ToolError(f'{what} {path!r} does not exist')
    if osp.isdir(path):
        raise ToolError(f'{what} {path!r} is a folder; give a file')
    if not os.access(path, os.R_OK):
        raise ToolError(f'{what} {path!r} cannot be read (permission '
                        'denied)')
    return path


def check_config(path: str) -> str:
    """A config argument: an existing ``.py`` file."""
    check_file(path, 'config file')
    if not path.endswith('.py'):
        raise ToolError(f'config file {path!r} is not a Python config '
                        '(.py); give an mmdet / mmseg / mmpretrain config')
    return path


def _writable_ancestor(path: str) -> Optional[str]:
    """The first existing folder above ``path`` where it can be created; a
    ToolError when an ancestor is a file or that folder is read-only."""
    parent = osp.dirname(osp.abspath(path))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise ToolError(f'cannot create {path!r}: {parent!r} is a file, '
                        'not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolError(f'cannot write {path!r}: folder {parent!r} is not '
                        'writable')
    return parent


def check_output_file(path: str,
                      what: str,
                      suffixes: Sequence[str] = (),
                      inputs: Iterable[str] = ()) -> str:
    """An output file: not an existing folder, not one of ``inputs``, with
    one of ``suffixes`` (when given), in a folder that exists or can be
    created. Nothing is created here."""
    if osp.isdir(path):
        example = osp.join(path, f'out{suffixes[0] if suffixes else ""}')
        raise ToolError(f'{what} {path!r} is an existing folder; give a '
                        f'file name, e.g. {example}')
    if suffixes and not path.lower().endswith(tuple(suffixes)):
        raise ToolError(f'{what} {path!r} must end in '
                        f'{" or ".join(suffixes)}')
    for src in inputs:
        if src and osp.exists(src) and osp.exists(path) and osp.samefile(
                src, path):
            raise ToolError(f'{what} {path!r} is the input file {src!r}: '
                            'refusing to overwrite the input; write to a '
                            'new file')
    _writable_ancestor(path)
    return path


def check_output_dir(path: str, what: str) -> str:
    """An output folder: not an existing file; it exists or can be
    created. Nothing is created here."""
    if osp.exists(path) and not osp.isdir(path):
        raise ToolError(f'{what} {path!r} is an existing file; give a '
                        'folder')
    if osp.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ToolError(f'{what} {path!r} is not writable')
    else:
        _writable_ancestor(path)
    return path


def check_shape(shape: Optional[Sequence[int]],
                minimum: int = MIN_INPUT_SIZE,
                what: str = '--shape',
                lengths: Sequence[int] = (2, )) -> Optional[tuple]:
    """An image size ``H W`` (or ``S`` when 1 is in ``lengths``): ints of
    at least ``minimum`` (the backbone's total stride)."""
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) not in lengths:
        counts = ' or '.join(str(n) for n in lengths)
        raise ToolError(f'{what} takes {counts} values (H W), got '
                        f'{len(shape)}: {list(shape)}')
    for value in shape:
        if isinstance(value, bool) or not isinstance(value, int) or \
                value < minimum:
            raise ToolError(
                f'{what} {" ".join(str(v) for v in shape)}: every side must '
                f'be an int of at least {minimum} (the total stride of the '
                f'backbone), got {value!r}')
    return shape


def check_number(value, what: str, low=None, high=None, integer=False):
    """``value`` within ``[low, high]`` (None: unbounded), else a ToolError
    naming ``what`` and the accepted range."""
    import math
    kind = 'an int' if integer else 'a number'
    if low is not None and high is not None:
        accepted = f'in [{low}, {high}]'
    elif low is not None:
        accepted = f'>= {low}'
    elif high is not None:
        accepted = f'<= {high}'
    else:
        accepted = 'finite'
    bad = (isinstance(value, bool)
           or not isinstance(value, int if integer else (int, float))
           or not math.isfinite(value)
           or (low is not None and value < low)
           or (high is not None and value > high))
    if bad:
        raise ToolError(f'{what} must be {kind} {accepted}, got {value!r}')
    return value


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
