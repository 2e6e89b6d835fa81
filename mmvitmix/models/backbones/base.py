"""Plumbing shared by every mmvitmix backbone.

Each backbone (RMT, ResT, Container-Light, RIFormer) subclasses
:class:`VitMixBackbone` and gets, written once:

* ``arch`` parsing: a variant name or a dict with the official argument names,
  with errors that list what is accepted;
* ``out_indices`` normalisation (int or sequence, negatives allowed);
* rejection of unknown keyword arguments with the list of accepted ones;
* input checks (4-D, channel count, smallest size for four stages);
* ``frozen_stages`` (stem + first N stages, applied in ``__init__`` and again
  in :meth:`train`) and ``norm_eval`` (BatchNorm layers kept in eval mode);
* ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that runs the
  backbone's official-checkpoint converter at load time and reports missing
  and unexpected keys instead of hiding them.
"""
import inspect
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitmix.utils import allow_mmengine_checkpoints


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
        """
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            unknown = sorted(
                set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location'})
            if unknown:
                raise ValueError(
                    f'{type(self).__name__}: Pretrained init_cfg has unknown '
                    f'keys {unknown}; accepted: checkpoint, prefix, '
                    'map_location')
            self.load_pretrained(
                cfg['checkpoint'],
                prefix=cfg.get('prefix'),
                map_location=cfg.get('map_location', 'cpu'))
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
                        map_location: str = 'cpu') -> dict:
        """Load ``checkpoint`` (path or loaded dict) into this backbone.

        Returns:
            dict: ``missing`` and ``unexpected`` key lists, also logged.
        """
        if isinstance(checkpoint, str):
            # whole detector / segmentor checkpoints written by mmengine
            allow_mmengine_checkpoints()
            print_log(f'{type(self).__name__}: loading {checkpoint}',
                      logger='current')
            ckpt = CheckpointLoader.load_checkpoint(
                checkpoint, map_location=map_location, logger='current')
        else:
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
        state = self.adapt_converted_state(self.converter(state))
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


def unwrap_state_dict(ckpt: dict) -> dict:
    """Return the flat state dict inside a checkpoint.

    Accepts ``{'model': sd}`` (official releases), ``{'state_dict': sd}``
    (mmengine / mmpretrain) or a flat state dict.
    """
    if not isinstance(ckpt, dict):
        raise TypeError(f'a checkpoint must be a dict, got '
                        f'{type(ckpt).__name__}')
    for key in ('state_dict', 'model'):
        if key in ckpt and isinstance(ckpt[key], dict):
            return dict(ckpt[key])
    return dict(ckpt)


def strip_prefix_if_all(state: dict, prefix: str) -> dict:
    """Strip ``prefix`` when every key carries it (e.g. ``'backbone.'``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_all_consumed(name: str, leftover: Iterable[str]) -> None:
    """Raise when a converter met keys that no rule covers."""
    leftover = sorted(leftover)
    if leftover:
        raise KeyError(f'{name}: no conversion rule for keys {leftover[:20]}'
                       f'{" ..." if len(leftover) > 20 else ""}')
