"""Plumbing shared by every mmvitmix backbone.

Each backbone (RMT, ResT, Container-Light, RIFormer) subclasses
:class:`VitMixBackbone` and gets, written once:

* ``arch`` parsing: a variant name or a dict with the official argument names,
  with errors that list what is accepted;
* ``out_indices`` normalisation (int or sequence, negatives allowed);
* rejection of unknown keyword arguments with the list of accepted ones;
* range checks of the common arguments (``in_channels``, ``drop_path_rate``,
  ``frozen_stages``, the flags) and of every numeric ``arch`` entry, with
  errors naming the argument and the accepted range
  (:func:`check_number`, :meth:`VitMixBackbone.init_common`);
* input checks (4-D, channel count, smallest size for four stages);
* ``frozen_stages`` (stem + first N stages, applied in ``__init__`` and again
  in :meth:`train`) and ``norm_eval`` (BatchNorm layers kept in eval mode);
* ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that runs the
  backbone's official-checkpoint converter at load time, reports missing
  and unexpected keys instead of hiding them, and refuses a checkpoint that
  covers too little of the backbone (``min_coverage``).
"""
import inspect
import math
import numbers
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitmix.utils import (CheckpointError, CheckpointNotFoundError,
                            read_checkpoint)
from mmvitmix.utils.checkpoint import DEFAULT_MIN_COVERAGE
from mmvitmix.utils.checkpoint import check_coverage as _check_coverage
from ..converters import unwrap_state_dict
from ..converters.identify import (backbone_family, check_checkpoint_family,
                                   check_checkpoint_variant)


def normalize_out_indices(out_indices: Union[int, Sequence[int]],
                          num_stages: int) -> tuple:
    """Return ``out_indices`` as a new sorted tuple of non-negative ints.

    Args:
        out_indices (int | Sequence[int]): stage indices, negatives count
            from the end.
        num_stages (int): number of stages of the backbone.
    """
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    if not isinstance(out_indices, (list, tuple)):
        raise TypeError('out_indices must be an int or a sequence of ints, '
                        f'got {type(out_indices).__name__}')
    result = []
    for index in out_indices:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f'out_indices entries must be ints, got {index!r}')
        if not -num_stages <= index < num_stages:
            raise ValueError(
                f'out_indices entry {index} is out of range: accepted '
                f'values are {-num_stages}..{num_stages - 1}')
        result.append(index % num_stages)
    if len(set(result)) != len(result):
        raise ValueError(f'out_indices {tuple(out_indices)} repeats a stage')
    return tuple(sorted(result))


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return (f'{"(" if low_open else "["}{low}, {high}'
                f'{")" if high_open else "]"}')
    if low is not None:
        return f'{">" if low_open else ">="} {low}'
    if high is not None:
        return f'{"<" if high_open else "<="} {high}'
    return 'any finite value'


def check_number(owner: str,
                 name: str,
                 value,
                 *,
                 integer: bool = False,
                 low=None,
                 high=None,
                 low_open: bool = False,
                 high_open: bool = False):
    """Return ``value`` if it is a number in range, else raise.

    Args:
        owner (str): who checks (the backbone's name), for the message.
        name (str): the argument's name, for the message.
        value: the value to check (bools are not numbers here).
        integer (bool): require an int.
        low, high: bounds (None: unbounded).
        low_open, high_open (bool): exclude the bound itself.

    Raises:
        TypeError: not an int / a real number.
        ValueError: NaN, infinite or out of range; the message names
            ``name`` and the accepted range, e.g. ``[0, 1)``.
    """
    kind = 'an int' if integer else 'a number'
    accepted = _range_text(low, high, low_open, high_open)
    wanted = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise TypeError(f'{owner}: {name} must be {kind} in {accepted}, got '
                        f'{value!r} ({type(value).__name__})')
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        raise ValueError(
            f'{owner}: {name} must be {kind} in {accepted}, got {value!r}')
    return value


def check_numbers(owner: str, name: str, values, **kwargs) -> list:
    """:func:`check_number` on every entry of a per-stage list."""
    return [
        check_number(owner, f'{name}[{i}]', v, **kwargs)
        for i, v in enumerate(values)
    ]


def check_flag(owner: str, name: str, value) -> bool:
    """Return ``value`` if it is a bool, else raise a TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be True or False, got '
                        f'{value!r} ({type(value).__name__})')
    return value


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Stochastic-depth rate per block, linear from 0 (timm's schedule).

    Computed on the CPU so that a backbone can be built under a
    ``torch.device('meta')`` context.
    """
    return torch.linspace(
        0, drop_path_rate, num_blocks, device='cpu').tolist()


def records_grad(module: nn.Module) -> bool:
    """Whether a forward now records a graph through ``module``'s weights
    (a training step), as opposed to inference or a frozen module."""
    return torch.is_grad_enabled() and any(
        p.requires_grad for p in module.parameters())


def run_blocks(blocks: Iterable[nn.Module],
               x: torch.Tensor,
               *args,
               with_cp: bool = False,
               recompute_context: Optional[Callable] = None) -> torch.Tensor:
    """``x = block(x, *args)`` for each block, activation-checkpointed with
    ``with_cp`` while ``x`` needs a gradient.

    Args:
        blocks: the blocks, in order.
        x (Tensor): the input of the first block.
        *args: passed to every block after ``x`` (e.g. the rotary tables).
        with_cp (bool): recompute each block's activations in backward
            (``torch.utils.checkpoint``, non-reentrant) instead of storing
            them.
        recompute_context (callable | None): ``block -> context manager``
            entered around the recomputation only (Container-Light keeps its
            BatchNorm running statistics from being updated twice).
    """
    for block in blocks:
        if with_cp and x.requires_grad:
            kwargs = {}
            if recompute_context is not None:
                kwargs['context_fn'] = lambda block=block: (
                    nullcontext(), recompute_context(block))
            x = cp.checkpoint(block, x, *args, use_reentrant=False, **kwargs)
        else:
            x = block(x, *args)
    return x


# DEFAULT_MIN_COVERAGE (imported above, from mmvitmix.utils.checkpoint):
# share of the backbone's parameters (by element count, the output norms
# that official ImageNet files lack not counted) that a Pretrained checkpoint
# must provide unless ``init_cfg`` lowers ``min_coverage``; the tools'
# ``--min-coverage`` has the same default.


def read_pretrained(owner: str, checkpoint: str, map_location: str):
    """:func:`mmvitmix.utils.read_checkpoint` (the tools' reader) with
    ``owner`` in front of its message: a missing file as missing
    (``FileNotFoundError``), anything torch raises while reading (random
    bytes give ``UnpicklingError``, ``IndexError``, ``KeyError``, ...) as
    an unreadable checkpoint."""
    try:
        return read_checkpoint(checkpoint, map_location=map_location)
    except CheckpointNotFoundError as exc:
        raise CheckpointNotFoundError(f'{owner}: {exc}') from exc
    except CheckpointError as exc:
        raise CheckpointError(f'{owner}: {exc}') from exc


class VitMixBackbone(BaseModule):
    """Base class of the mmvitmix backbones.

    Subclasses set :attr:`arch_settings`, :attr:`arch_keys`, implement
    :meth:`stage_modules` and :meth:`output_norm_keys`, and set
    :attr:`converter` to their official-checkpoint converter.
    """

    #: variant name -> dict of the official constructor's arguments
    arch_settings: Dict[str, dict] = {}
    #: keys that an ``arch`` dict must provide
    arch_keys: tuple = ()
    #: keys that an ``arch`` dict may provide (filled from the default if not)
    arch_optional: Dict[str, object] = {}
    num_stages: int = 4
    #: total stride of the last stage: the smallest input side accepted
    min_input_size: int = 32
    #: ``convert(state_dict) -> state_dict`` for the official layout
    converter: Optional[Callable[[dict], dict]] = None

    # ------------------------------------------------------------------ args
    @classmethod
    def parse_arch(cls, arch: Union[str, dict]) -> dict:
        """Resolve ``arch`` into a dict of architecture settings."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ValueError(
                    f'{cls.__name__}: unknown arch {arch!r}; accepted names '
                    f'are {sorted(cls.arch_settings)} or a dict with keys '
                    f'{list(cls.arch_keys)}')
            return dict(cls.arch_settings[key])
        if isinstance(arch, dict):
            missing = [k for k in cls.arch_keys if k not in arch]
            if missing:
                raise ValueError(
                    f'{cls.__name__}: arch dict is missing keys {missing}; '
                    f'required keys are {list(cls.arch_keys)}')
            allowed = set(cls.arch_keys) | set(cls.arch_optional)
            unknown = sorted(set(arch) - allowed)
            if unknown:
                raise ValueError(
                    f'{cls.__name__}: arch dict has unknown keys {unknown}; '
                    f'accepted keys are {sorted(allowed)}')
            parsed = dict(cls.arch_optional)
            parsed.update(arch)
            return parsed
        raise TypeError(f'{cls.__name__}: arch must be a str or a dict, got '
                        f'{type(arch).__name__}')

    @classmethod
    def reject_unknown_kwargs(cls, kwargs: dict) -> None:
        """Raise a TypeError naming unknown constructor arguments."""
        if kwargs:
            params = [
                p for p in inspect.signature(cls.__init__).parameters
                if p not in ('self', 'kwargs')
            ]
            raise TypeError(
                f'{cls.__name__}: unknown argument(s) {sorted(kwargs)}; '
                f'accepted arguments are {params}')

    def init_common(self,
                    *,
                    in_channels: int,
                    out_indices: Union[int, Sequence[int]],
                    frozen_stages: int,
                    norm_eval: bool,
                    with_cp: bool,
                    drop_path_rate: float,
                    num_blocks: int,
                    drop_rate: Optional[float] = None) -> List[float]:
        """Check and set the arguments every backbone takes.

        Sets ``in_channels``, ``out_indices`` (normalised), ``frozen_stages``,
        ``norm_eval`` and ``with_cp``; checks ``drop_path_rate`` (and
        ``drop_rate`` where the backbone has one) to be in ``[0, 1)``.

        Returns:
            list[float]: the drop-path rate of each of ``num_blocks`` blocks.
        """
        owner = type(self).__name__
        self.in_channels = check_number(
            owner, 'in_channels', in_channels, integer=True, low=1)
        self.out_indices = normalize_out_indices(out_indices, self.num_stages)
        self.frozen_stages = self.check_frozen_stages(frozen_stages)
        self.norm_eval = check_flag(owner, 'norm_eval', norm_eval)
        self.with_cp = check_flag(owner, 'with_cp', with_cp)
        check_number(owner, 'drop_path_rate', drop_path_rate, low=0, high=1,
                     high_open=True)
        if drop_rate is not None:
            check_number(owner, 'drop_rate', drop_rate, low=0, high=1,
                         high_open=True)
        return drop_path_rates(drop_path_rate, num_blocks)

    def build_out_norms(self, out_norm_cfg: Optional[dict],
                        dims: Sequence[int]) -> None:
        """Add ``norm{i}`` (``out_norm_cfg`` over ``dims[i]`` channels) for
        every requested stage ``i``; None adds none."""
        self.out_norm_cfg = out_norm_cfg
        if out_norm_cfg is None:
            return
        for i in self.out_indices:
            self.add_module(f'norm{i}',
                            build_norm_layer(out_norm_cfg, dims[i])[1])

    def apply_out_norm(self,
                       index: int,
                       x: torch.Tensor,
                       channels_last: bool = False) -> torch.Tensor:
        """Stage ``index``'s output norm on ``x`` (NCHW, or NHWC with
        ``channels_last``); a LayerNorm normalises over the channels, other
        norms (BatchNorm, GroupNorm) take NCHW. Identity without a norm."""
        norm = getattr(self, f'norm{index}', None)
        if norm is None:
            return x
        if isinstance(norm, nn.LayerNorm):
            if channels_last:
                return norm(x)
            return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if channels_last:
            return norm(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return norm(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate an NCHW image batch."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{type(self).__name__} expects a torch.Tensor, '
                            f'got {type(x).__name__}')
        if x.dim() != 4:
            raise ValueError(
                f'{type(self).__name__} expects a 4-D NCHW tensor, got shape '
                f'{tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} was built with in_channels='
                f'{self.in_channels}, got an input with {x.shape[1]} channels')
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f'{type(self).__name__}: input {h}x{w} is too small for four '
                f'stages; height and width must be at least '
                f'{self.min_input_size}')

    # --------------------------------------------------------- freeze / eval
    def stage_modules(self, index: int) -> List[nn.Module]:
        """Modules frozen with stage ``index`` (-1 is the stem).

        Stage ``i`` comprises its input downsampling layer, its blocks and
        its output norm, i.e. everything that computes output ``i`` beyond
        output ``i - 1``.
        """
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for index in range(-1, self.frozen_stages):
            for module in self.stage_modules(index):
                if module is None:
                    continue
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def check_frozen_stages(self, frozen_stages: int) -> int:
        if not isinstance(frozen_stages, int) or not (
                -1 <= frozen_stages <= self.num_stages):
            raise ValueError(
                f'{type(self).__name__}: frozen_stages must be an int in '
                f'-1..{self.num_stages} (-1: nothing frozen, 0: the stem, N: '
                f'the stem and the first N stages), got {frozen_stages!r}')
        return frozen_stages

    def train(self, mode: bool = True):
        """Set train mode, then re-apply ``frozen_stages`` and ``norm_eval``."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # -------------------------------------------------------------- weights
    def output_norm_keys(self) -> List[str]:
        """State-dict keys of the output norms (absent from official files)."""
        return [
            k for k in self.state_dict()
            if any(k.startswith(f'norm{i}.') for i in self.out_indices)
        ]

    def init_weights(self) -> None:
        """Initialise from scratch, or load a checkpoint through the converter.

        With ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` the file may
        be an official release (converted on the fly), a file written by
        ``tools/model_converters/*2mmvitmix.py``, or a whole detector /
        segmentor checkpoint (``prefix='backbone.'`` selects the backbone).
        ``min_coverage`` (default :data:`DEFAULT_MIN_COVERAGE`) is the share
        of the backbone's parameters the file must provide; see
        :meth:`load_pretrained`.
        """
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            accepted = ['checkpoint', 'prefix', 'map_location',
                        'min_coverage']
            unknown = sorted(set(cfg) - {'type', *accepted})
            if unknown:
                raise ValueError(
                    f'{type(self).__name__}: Pretrained init_cfg has unknown '
                    f'keys {unknown}; accepted: {", ".join(accepted)}')
            if 'checkpoint' not in cfg:
                raise ValueError(
                    f'{type(self).__name__}: Pretrained init_cfg needs a '
                    "'checkpoint' (a path or URL)")
            self.load_pretrained(
                cfg['checkpoint'],
                prefix=cfg.get('prefix'),
                map_location=cfg.get('map_location', 'cpu'),
                min_coverage=cfg.get('min_coverage', DEFAULT_MIN_COVERAGE))
            self._is_init = True
        else:
            super().init_weights()

    def adapt_converted_state(self, state: dict) -> dict:
        """Hook: adjust a converted state dict to this instance's options.

        Runs after :attr:`converter` (a pure function that does not know the
        instance, e.g. which output norms exist). Default: unchanged.
        """
        return state

    def load_pretrained(self,
                        checkpoint: Union[str, dict],
                        prefix: Optional[str] = None,
                        map_location: str = 'cpu',
                        min_coverage: float = DEFAULT_MIN_COVERAGE,
                        source: Optional[str] = None,
                        opt_in: Optional[str] = None) -> dict:
        """Load ``checkpoint`` (path or loaded dict) into this backbone.

        Args:
            checkpoint (str | dict): a path / URL or a loaded checkpoint.
            prefix (str | None): take only the keys under this prefix
                (e.g. ``'backbone.'`` of a detector checkpoint).
            map_location (str): where tensors are loaded.
            min_coverage (float): refuse the checkpoint (ValueError, nothing
                loaded) when it provides less than this share of the
                backbone's parameters, counted by element, the output norms
                that ImageNet files lack not counted. A checkpoint that
                provides none is refused whatever the value. 0..1;
                default :data:`DEFAULT_MIN_COVERAGE`. The rule is
                :func:`mmvitmix.utils.check_coverage`, the same as the
                tools'; tensors whose shape differs from the backbone's
                count as not provided and are not loaded.
            source (str | None): the file named in messages when
                ``checkpoint`` is a dict already read.
            opt_in (str | None): how a refusal tells the user to accept a
                partial load, ``{share}`` standing for the share (default:
                ``min_coverage`` in ``init_cfg``; the tools: their
                ``--min-coverage`` flag).

        Returns:
            dict: ``missing`` (size mismatches included), ``unexpected``
            and ``fresh`` (output norms kept at their initial value) key
            lists, also logged.
        """
        name = type(self).__name__
        check_number(name, 'min_coverage', min_coverage, low=0, high=1)
        if isinstance(checkpoint, str):
            source = checkpoint
            print_log(f'{type(self).__name__}: loading {checkpoint}',
                      logger='current')
            # unreadable files named as such; mmengine's files allowed
            ckpt = read_pretrained(name, checkpoint, map_location)
        else:
            source = source or 'the checkpoint dict passed in'
            ckpt = checkpoint
        state = unwrap_state_dict(ckpt)
        if prefix:
            if not prefix.endswith('.'):
                prefix += '.'
            state = {
                k[len(prefix):]: v
                for k, v in state.items() if k.startswith(prefix)
            }
            if not state:
                raise ValueError(f'no key of the checkpoint starts with '
                                 f'prefix {prefix!r}')
        # another family's file is refused by name, before any conversion
        family, found = backbone_family(type(self)), None
        if family is not None:
            found = check_checkpoint_family(
                name, (family, ), state, source,
                lambda found: '; give it to a backbone of that type')
        try:
            state = self.converter(state)
        except (KeyError, ValueError, TypeError) as exc:
            # the converter's reason, with the file it was given
            text = (exc.args[0] if isinstance(exc, KeyError) and exc.args
                    else str(exc))
            raise CheckpointError(
                f'{name}: cannot load {source}: {text}') from exc
        state = self.adapt_converted_state(state)
        # another variant of the family: name the arch that fits the file
        check_checkpoint_variant(name, self.state_dict(), state, source, found)
        coverage = self.check_coverage(state, source, min_coverage, opt_in)
        mismatched = [k for k, _, _ in coverage.mismatched]
        if coverage.mismatched:
            print_log(
                f'{type(self).__name__}: size mismatches, not loaded: ' +
                ', '.join(f'{k}: {a} in the file, {b} in the backbone'
                          for k, a, b in coverage.mismatched),
                logger='current',
                level=30)
            state = {k: v for k, v in state.items() if k not in mismatched}
        result = self.load_state_dict(state, strict=False)
        expected_missing = set(self.output_norm_keys())
        missing = [k for k in result.missing_keys if k not in expected_missing]
        fresh = [k for k in result.missing_keys if k in expected_missing]
        if fresh:
            print_log(
                f'{type(self).__name__}: output norms not in the checkpoint, '
                f'kept at their initial value: {fresh}',
                logger='current')
        if missing:
            print_log(
                f'{type(self).__name__}: missing keys in the checkpoint: '
                f'{missing}',
                logger='current',
                level=30)
        if result.unexpected_keys:
            print_log(
                f'{type(self).__name__}: unexpected keys in the checkpoint: '
                f'{result.unexpected_keys}',
                logger='current',
                level=30)
        return dict(missing=missing, unexpected=list(result.unexpected_keys),
                    fresh=fresh)

    def check_coverage(self,
                       state: dict,
                       source: str,
                       min_coverage: float,
                       opt_in: Optional[str] = None):
        """Refuse a converted state dict that covers too little of us.

        :func:`mmvitmix.utils.check_coverage` (the tools' rule) with the
        output norms not counted and ``init_cfg``'s ``min_coverage`` as the
        way to opt in.

        Returns:
            Coverage: the measurement (``share``: of the backbone's
            parameters, by element, the output norms not counted, that
            ``state`` provides with matching shapes).

        Raises:
            CheckpointError (a ValueError): naming ``source``, the share,
            the first missing keys and how to opt in, when no parameter or
            less than ``min_coverage`` of them would be loaded.
        """
        return _check_coverage(
            self,
            state,
            source,
            min_coverage,
            what='backbone',
            ignore=self.output_norm_keys(),
            opt_in=opt_in or (
                "set min_coverage in init_cfg (e.g. dict(type='Pretrained', "
                'checkpoint=..., min_coverage={share}))'))
