r"""What a checkpoint is: its backbone family, its layout and the
architecture its tensors' shapes say it has.

:func:`identify` reads key names and tensor shapes (nothing is computed on
the values, except RMT's retention decay, see below), so it works on
``meta`` tensors as well as on a loaded file, in both layouts:

* the official release files (RMT's ``layers.{i}.blocks.{j}.retention``,
  ResT's ``stage{k}.{j}``, ResT v2's ``stem.proj`` / ``patch_{k}``,
  Container's ``blocks{k}``, MMPretrain RIFormer's ``network.{n}``);
* this project's layout (``stem.*``, ``stages.{i}.blocks.{j}.*``,
  ``norm{i}``), as the converters write it;

flat, wrapped in ``state_dict`` / ``model``, or the ``backbone.*`` of a
whole detector / segmentor / classifier file. :func:`describe_checkpoint`
puts the answer in words a user can paste into a config, e.g. ``an RMT
checkpoint (official layout) that fits type='RMT', arch='t'``.

What the shapes determine, per family (the rest is listed in
:attr:`CheckpointIdentity.undetermined` and, when an ``arch`` dict is
printed, taken from the registered variant that agrees on the most
fields):

* RMT: ``embed_dims``, ``depths``, ``num_heads`` (the retention decay has
  one entry per head), ``mlp_ratios``, ``layerscales``; ``init_values`` and
  ``heads_ranges`` from the decay's *values* when the tensors have values
  (``decay[h] = log(1 - 2 ** -(init + range * h / heads))``), not from a
  shape table; ``chunkwise_recurrents`` never (no tensor depends on it).
* ResT: ``embed_dims``, ``depths``, ``mlp_ratios``, ``sr_ratios`` (kernel
  of the reduction conv), ``qkv_bias``, ``apply_transform`` and the heads of
  every stage with a head-mixing ``transform_conv`` (one head otherwise).
* ResT v2: ``embed_dims``, ``depths``, ``sr_ratios`` (channels of the
  upsampling conv); ``num_heads`` not (no tensor depends on it).
* Container-Light: ``embed_dim``, ``depth``, ``mlp_ratio``, ``patch_size``,
  ``qkv_bias``; ``num_heads`` not.
* RIFormer: ``layers``, ``embed_dims``, ``mlp_ratios``; the layer-scale
  initial value not (trained values replace it).
"""
import math
import re
from typing import Dict, List, Mapping, Optional, Tuple

from .engine import unwrap_state_dict

#: family -> (words for a user, the backbone's registry name, converter,
#: article)
FAMILIES = {
    'RMT': ('RMT', 'RMT', 'rmt2mmvitmix.py', 'an'),
    'ResT': ('ResT (v1)', 'ResT', 'rest2mmvitmix.py', 'a'),
    'ResTV2': ('ResT v2', 'ResTV2', 'rest2mmvitmix.py', 'a'),
    'ContainerLight': ('Container-Light', 'ContainerLight',
                       'container2mmvitmix.py', 'a'),
    'RIFormer': ('RIFormer', 'RIFormer', 'riformer2mmvitmix.py', 'an'),
}

_B = r'stages\.\d+\.blocks\.\d+\.'
#: (family, layout) -> patterns; a key matching one counts for that family
_SIGNATURES = {
    ('RMT', 'official'): (r'layers\.\d+\.blocks\.\d+\.retention\.',
                          r'layers\.\d+\.Relpos\.',
                          r'patch_embed\.proj\.\d+\.'),
    ('RMT', 'mmvitmix'): (r'stages\.\d+\.rel_pos\.',
                          _B + r'attn\.(?:q_proj|lepe)\.', _B + r'cpe\.'),
    ('ResT', 'official'): (r'stage[1-4]\.\d+\.attn\.', r'patch_embed_[234]\.',
                           r'stem\.pos\.pa_conv\.'),
    ('ResTV2', 'official'): (r'stem\.proj\.', r'patch_[234]\.',
                             r'stage[1-4]\.\d+\.attn\.up\.'),
    ('ResT', 'mmvitmix'): (_B + r'attn\.(?:kv|transform_conv)\.',
                           r'stages\.\d+\.patch_embed\.pa\.',
                           r'stem\.pa\.conv\.'),
    ('ContainerLight', 'official'): (r'blocks[1-4]\.\d+\.',
                                     r'patch_embed[1-4]\.'),
    ('ContainerLight', 'mmvitmix'): (_B + r'(?:affinity|mix_weight|proj_in|'
                                     r'local|qkv)\b',
                                     r'stages\.\d+\.patch_embed\.proj\.'),
    ('RIFormer', 'official'): (r'network\.\d+\.\d+\.',
                               r'network\.[135]\.proj\.'),
    ('RIFormer', 'mmvitmix'): (_B + r'(?:token_mixer|norm_reparam|gamma[12])',
                               r'stages\.\d+\.downsample\.(?:weight|bias)$',
                               r'stem\.(?:weight|bias)$'),
}
_COMPILED = {
    key: tuple(re.compile(p) for p in patterns)
    for key, patterns in _SIGNATURES.items()
}


class CheckpointIdentity:
    """The answer of :func:`identify`.

    Attributes:
        family (str): ``'RMT'``, ``'ResT'``, ``'ResTV2'``,
            ``'ContainerLight'`` or ``'RIFormer'`` (the backbone's class).
        layout (str): ``'official'`` or ``'mmvitmix'``.
        whole_model (bool): the backbone was found under ``backbone.`` of a
            whole detector / segmentor / classifier file.
        arch (dict): the architecture entries the file determines, with the
            backbone's ``arch`` argument names.
        undetermined (list[str]): ``arch`` entries the file cannot tell.
        variant (str | None): the registered variant (``arch_zoo`` name)
            whose settings agree with every determined entry.
        nearest (str | None): the variant agreeing on the most entries
            (fills the undetermined ones of a printed ``arch`` dict).
    """

    def __init__(self, family: str, layout: str, whole_model: bool,
                 arch: dict, undetermined: List[str],
                 variant: Optional[str], nearest: Optional[str]):
        self.family = family
        self.layout = layout
        self.whole_model = whole_model
        self.arch = arch
        self.undetermined = undetermined
        self.variant = variant
        self.nearest = nearest

    def __repr__(self) -> str:
        return (f'CheckpointIdentity(family={self.family!r}, layout='
                f'{self.layout!r}, variant={self.variant!r}, arch='
                f'{self.arch!r}, undetermined={self.undetermined!r})')

    @property
    def family_name(self) -> str:
        """The family in words (``'ResT v2'``, ``'Container-Light'``)."""
        return FAMILIES[self.family][0]

    @property
    def converter(self) -> str:
        """The converter script that takes this family's official files."""
        return FAMILIES[self.family][2]

    def arch_text(self) -> Optional[str]:
        """``arch='t'`` or ``arch=dict(...)`` (None: nothing inferred)."""
        if self.variant is not None:
            return f'arch={self.variant!r}'
        if not self.arch:
            return None
        full = dict(self.arch)
        filled = []
        if self.nearest is not None:
            settings = _arch_settings(self.family)[self.nearest]
            for key in _required_keys(self.family):
                if key not in full and key in settings:
                    full[key] = settings[key]
                    filled.append(key)
        text = 'arch=dict(' + ', '.join(
            f'{k}={_fmt(v)}' for k, v in full.items()) + ')'
        notes = []
        if filled:
            notes.append(f'{", ".join(filled)}: not determined by the file, '
                         f'shown as in arch={self.nearest!r}')
        unknown = [k for k in self.undetermined
                   if k not in filled and k not in _IRRELEVANT]
        if unknown:
            notes.append(f'{", ".join(unknown)}: not determined by the file'
                         ', the default applies unless given')
        return text + ''.join(f' ({n})' for n in notes)

    def describe(self) -> str:
        """One sentence: family, layout and the ``arch`` that fits."""
        where = f'{self.layout} layout'
        if self.whole_model:
            where += ", inside a whole model under 'backbone.'"
        text = (f'{FAMILIES[self.family][3]} {self.family_name} checkpoint '
                f'({where})')
        arch = self.arch_text()
        if arch is None:
            return text + ' whose architecture could not be inferred'
        return (f"{text} that fits type='{FAMILIES[self.family][1]}', "
                f'{arch}')


#: arch entries no tensor of a trained checkpoint depends on (the initial
#: value of a trained layer scale)
_IRRELEVANT = ('layer_scale_init_value', )


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_fmt(v) for v in value) + ']'
    return repr(value)


def _backbone_class(family: str):
    from mmvitmix.models import backbones
    return getattr(backbones, FAMILIES[family][1])


def _arch_settings(family: str) -> Dict[str, dict]:
    return _backbone_class(family).arch_settings


def _required_keys(family: str) -> Tuple[str, ...]:
    return tuple(_backbone_class(family).arch_keys)


def _shape(value) -> Optional[Tuple[int, ...]]:
    shape = getattr(value, 'shape', None)
    if shape is None:
        return None
    return tuple(int(s) for s in shape)


def _backbone_part(state: Mapping) -> Tuple[dict, bool]:
    """The backbone's keys: those under ``backbone.`` (whole models), then
    under ``bottom_up.`` (detectron2, whose FPN sits beside it as
    ``backbone.fpn_*``), with ``module.`` (DataParallel) removed."""
    whole = False
    for prefix in ('backbone.', 'bottom_up.'):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()
                     if k.startswith(prefix)}
            whole = whole or prefix == 'backbone.'
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return dict(state), whole


def family_of(state: Mapping) -> Optional[Tuple[str, str]]:
    """``(family, layout)`` by key names alone, None if no family's keys
    are there. ``state``: a flat state dict (backbone keys)."""
    hits = {}
    for (family, layout), patterns in _COMPILED.items():
        count = sum(1 for key in state
                    if any(p.match(key) for p in patterns))
        if count:
            hits[(family, layout)] = count
    if not hits:
        return None
    family, layout = max(hits, key=hits.get)
    # ResT v1 and v2 share most names; v2 has keys v1 never has
    if family in ('ResT', 'ResTV2'):
        if layout == 'official':
            v2 = ('ResTV2', 'official') in hits
        else:
            v2 = any(
                re.match(_B + r'attn\.up_conv\.', k)
                or k.startswith('stem.norm.') for k in state)
        family = 'ResTV2' if v2 else 'ResT'
    return family, layout


def _converter(family: str):
    from mmvitmix.models import backbones
    return {
        'RMT': backbones.convert_rmt,
        'ResT': backbones.convert_rest,
        'ResTV2': backbones.convert_restv2,
        'ContainerLight': backbones.convert_container,
        'RIFormer': backbones.convert_riformer,
    }[family]


# ----------------------------------------------------------------- inference
def _depths(shapes: Mapping[str, tuple], num_stages: int = 4) -> List[int]:
    depth = [0] * num_stages
    for key in shapes:
        m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.', key)
        if m and int(m[1]) < num_stages:
            depth[int(m[1])] = max(depth[int(m[1])], int(m[2]) + 1)
    return depth


def _ratio(hidden: int, dim: int):
    ratio = hidden / dim
    return int(ratio) if ratio == int(ratio) else ratio


def _ffn(shapes, i: int, name: str) -> Optional[Tuple[int, int]]:
    """(dim, hidden) of stage ``i``'s first block's MLP."""
    fc1 = shapes.get(f'stages.{i}.blocks.0.{name}.fc1.weight')
    fc2 = shapes.get(f'stages.{i}.blocks.0.{name}.fc2.weight')
    if fc1 is None or fc2 is None:
        return None
    return fc2[0], fc1[0]


def _common(shapes, ffn: str, dims_key: str, depths_key: str,
            ratios_key: str) -> Optional[dict]:
    depths = _depths(shapes)
    ffns = [_ffn(shapes, i, ffn) for i in range(4)]
    if not all(depths) or None in ffns:
        return None
    return {
        dims_key: [d for d, _ in ffns],
        depths_key: depths,
        ratios_key: [_ratio(h, d) for d, h in ffns],
    }


def _decay_params(decay) -> Optional[Tuple[float, float]]:
    """(init_value, heads_range) from RMT's retention decay values."""
    try:
        if decay.device.type == 'meta' or decay.numel() < 2:
            return None
        values = [float(v) for v in decay.detach().float().cpu().tolist()]
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    heads = len(values)
    if any(not v < 0 for v in values):
        return None
    x = [-math.log2(1 - math.exp(v)) for v in values]
    init, step = x[0], x[1] - x[0]
    if any(abs(x[h] - (init + step * h)) > 1e-3 for h in range(heads)):
        return None
    return _nice(init), _nice(step * heads)


def _nice(value: float):
    if abs(value - round(value)) < 1e-3:
        return int(round(value))
    return round(value, 4)


def _infer_rmt(shapes, state) -> Tuple[dict, List[str]]:
    arch = _common(shapes, 'ffn', 'embed_dims', 'depths', 'mlp_ratios')
    if arch is None:
        return {}, list(_required_keys('RMT'))
    heads = [shapes.get(f'stages.{i}.rel_pos.log_decay') for i in range(4)]
    undetermined = []
    out = {'embed_dims': arch['embed_dims'], 'depths': arch['depths']}
    if None in heads:
        undetermined.append('num_heads')
    else:
        out['num_heads'] = [h[0] for h in heads]
    decay = [_decay_params(state.get(f'stages.{i}.rel_pos.log_decay'))
             for i in range(4)]
    if None in decay:
        undetermined += ['init_values', 'heads_ranges']
    else:
        out['init_values'] = [d[0] for d in decay]
        out['heads_ranges'] = [d[1] for d in decay]
    out['mlp_ratios'] = arch['mlp_ratios']
    undetermined.append('chunkwise_recurrents')
    out['layerscales'] = [
        f'stages.{i}.blocks.0.gamma1' in shapes for i in range(4)
    ]
    return out, undetermined


def _infer_rest(shapes, state) -> Tuple[dict, List[str]]:
    arch = _common(shapes, 'ffn', 'embed_dims', 'depths', 'mlp_ratios')
    if arch is None:
        return {}, list(_required_keys('ResT'))
    transform = [shapes.get(f'stages.{i}.blocks.0.attn.transform_conv.weight')
                 for i in range(4)]
    apply_transform = any(t is not None for t in transform)
    out = {'embed_dims': arch['embed_dims']}
    undetermined = []
    if apply_transform:
        out['num_heads'] = [t[0] if t is not None else 1 for t in transform]
    else:
        undetermined.append('num_heads')
    out['mlp_ratios'] = arch['mlp_ratios']
    out['qkv_bias'] = 'stages.0.blocks.0.attn.q.bias' in shapes
    out['depths'] = arch['depths']
    srs = [shapes.get(f'stages.{i}.blocks.0.attn.sr.weight') for i in range(4)]
    out['sr_ratios'] = [s[-1] - 1 if s is not None else 1 for s in srs]
    if apply_transform:
        out['apply_transform'] = True
    else:
        undetermined.append('apply_transform')
    return out, undetermined


def _infer_restv2(shapes, state) -> Tuple[dict, List[str]]:
    arch = _common(shapes, 'ffn', 'embed_dims', 'depths', 'mlp_ratios')
    if arch is None:
        return {}, list(_required_keys('ResTV2')) + ['num_heads']
    out = {'embed_dims': arch['embed_dims'], 'depths': arch['depths']}
    ups = [shapes.get(f'stages.{i}.blocks.0.attn.up_conv.weight')
           for i in range(4)]
    if None not in ups:
        out['sr_ratios'] = [
            int(round(math.sqrt(u[0] / d)))
            for u, d in zip(ups, arch['embed_dims'])
        ]
    return out, ['num_heads']


def _infer_container(shapes, state) -> Tuple[dict, List[str]]:
    arch = _common(shapes, 'mlp', 'embed_dim', 'depth', 'mlp_ratio')
    if arch is None:
        return {}, list(_required_keys('ContainerLight'))
    patches = [shapes.get(f'stages.{i}.patch_embed.proj.weight')
               for i in range(4)]
    out = dict(arch)
    if None not in patches:
        out['patch_size'] = [p[-1] for p in patches]
    out['qkv_bias'] = 'stages.3.blocks.0.qkv.bias' in shapes
    return out, ['num_heads']


def _infer_riformer(shapes, state) -> Tuple[dict, List[str]]:
    arch = _common(shapes, 'ffn', 'embed_dims', 'layers', 'mlp_ratios')
    if arch is None:
        return {}, list(_required_keys('RIFormer'))
    return ({'layers': arch['layers'], 'embed_dims': arch['embed_dims'],
             'mlp_ratios': arch['mlp_ratios']}, ['layer_scale_init_value'])


_INFER = {
    'RMT': _infer_rmt,
    'ResT': _infer_rest,
    'ResTV2': _infer_restv2,
    'ContainerLight': _infer_container,
    'RIFormer': _infer_riformer,
}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def _match_variants(family: str,
                    arch: dict) -> Tuple[Optional[str], Optional[str]]:
    """(variant agreeing on every determined entry, nearest variant)."""
    best, best_score, exact = None, -1, None
    for name, settings in _arch_settings(family).items():
        compared = [k for k in arch if k in settings]
        agree = sum(_same(arch[k], settings[k]) for k in compared)
        if compared and agree == len(compared) and exact is None:
            exact = name
        if agree > best_score:
            best, best_score = name, agree
    return exact, best


def identify(checkpoint: Mapping) -> Optional[CheckpointIdentity]:
    """Which backbone family and architecture ``checkpoint`` holds.

    Args:
        checkpoint (Mapping): a loaded checkpoint (``{'state_dict': ...}``,
            ``{'model': ...}`` or flat) whose values have a ``shape``
            (tensors, ``meta`` tensors included).

    Returns:
        CheckpointIdentity | None: None when no key belongs to a family
        mmvitmix knows.
    """
    try:
        state = unwrap_state_dict(dict(checkpoint))
    except (TypeError, ValueError):
        return None
    state = {k: v for k, v in state.items()
             if isinstance(k, str) and _shape(v) is not None}
    state, whole = _backbone_part(state)
    found = family_of(state)
    if found is None:
        return None
    family, layout = found
    ours = state
    if layout == 'official':
        try:
            ours = _converter(family)(state)
        except (KeyError, ValueError, RuntimeError, TypeError):
            ours = {}
    shapes = {k: _shape(v) for k, v in ours.items() if _shape(v) is not None}
    arch, undetermined = _INFER[family](shapes, ours)
    variant = nearest = None
    if arch:
        variant, nearest = _match_variants(family, arch)
    return CheckpointIdentity(family, layout, whole, arch, undetermined,
                              variant, nearest)


def describe_checkpoint(checkpoint: Mapping) -> Optional[str]:
    """:func:`identify` in one sentence (None for a file of no known
    family), e.g. ``an RMT checkpoint (official layout) that fits
    type='RMT', arch='t'``."""
    found = identify(checkpoint)
    return None if found is None else found.describe()


# ------------------------------------------------------------------ checks
def backbone_family(cls: type) -> Optional[str]:
    """The family of a backbone class (its own or a parent's name)."""
    for klass in cls.__mro__:
        if klass.__name__ in FAMILIES:
            return klass.__name__
    return None


def _first_keys(state: Mapping, count: int = 5) -> str:
    keys = [str(k) for k in list(state)[:count]]
    more = ' ...' if len(state) > count else ''
    return '[' + ', '.join(keys) + more + ']'


def check_checkpoint_family(owner: Optional[str],
                            accepted: Tuple[str, ...],
                            state: Mapping,
                            source: str,
                            what=None,
                            error: type = ValueError
                            ) -> Optional[CheckpointIdentity]:
    """Refuse a state dict of another family than ``accepted``.

    Args:
        owner (str | None): who checks (a backbone's name), the message's
            first word.
        accepted (tuple[str]): the families taken (keys of
            :data:`FAMILIES`).
        state (Mapping): the flat state dict (any layout, any prefix).
        source (str): the file (or words for the dict) in the message.
        what (callable | None): ``CheckpointIdentity -> str``, how to do it
            right, appended to the message when another family is found
            (default :func:`conversion_advice`).
        error (type): the exception class raised (a ``ValueError``).

    Returns:
        CheckpointIdentity | None: what ``state`` is; None for an empty
        ``state`` (the caller's own check reports that).

    Raises:
        ValueError: ``state`` is of another family (named, with the ``arch``
            it fits), or of none that mmvitmix knows (its first keys named).
    """
    found = identify(state)
    names = ' / '.join(FAMILIES[f][0] for f in accepted)
    head = f'{owner}: ' if owner else ''
    if found is None:
        if not state:
            return None
        known = ', '.join(v[0] for v in FAMILIES.values())
        raise error(
            f'{head}{source} is not {FAMILIES[accepted[0]][3]} {names} '
            'checkpoint: none of its '
            f'{len(state)} keys belongs to a backbone mmvitmix knows ({known}'
            f'); first keys: {_first_keys(state)}')
    if found.family not in accepted:
        advice = (what or conversion_advice)(found)
        raise error(f'{head}{source} is {found.describe()}, not {names}'
                    f'{advice}')
    return found


def check_checkpoint_variant(
        owner: str,
        model_state: Mapping,
        state: Mapping,
        source: str,
        found: Optional[CheckpointIdentity] = None) -> None:
    """Refuse a converted state dict whose tensors do not fit the model.

    A tensor of another shape, or blocks beyond the model's depth, mean the
    file is another variant: the message names the ``arch`` the file fits
    (:func:`describe_checkpoint`) and the one configured. ``state`` is in
    the model's layout (converted); ``found``: what the file was before
    conversion (default: ``identify(state)``).

    Raises:
        ValueError: naming ``source``, the first mismatching tensors and the
            ``arch`` that loads the file.
    """
    wrong = []
    for key, value in state.items():
        ours = model_state.get(key)
        if ours is None or _shape(value) is None:
            continue
        if _shape(value) != _shape(ours):
            wrong.append(f'{key}: file {_shape(value)}, model {_shape(ours)}')
    depth = _depths({k: None for k in model_state})
    deeper = sorted(
        k for k in state
        if (m := re.match(r'stages\.(\d+)\.blocks\.(\d+)\.', k))
        and int(m[1]) < len(depth) and int(m[2]) >= depth[int(m[1])] > 0)
    if not wrong and not deeper:
        return
    problems = []
    if wrong:
        problems.append(f'{len(wrong)} tensors have another shape (first: '
                        f'{"; ".join(wrong[:3])})')
    if deeper:
        problems.append(f'{len(deeper)} tensors belong to blocks the model '
                        f'does not have (first: {", ".join(deeper[:3])})')
    configured = identify(model_state)
    mine = configured.arch_text() if configured is not None else None
    found = found if found is not None else identify(state)
    text = (f'the file is {found.describe()}' if found is not None else
            'its architecture could not be inferred')
    raise ValueError(
        f'{owner}: {source} does not fit this {owner}'
        f'{f" ({mine})" if mine else ""}: {"; ".join(problems)}; {text}')


def conversion_advice(found: CheckpointIdentity) -> str:
    """What to do with a file of ``found``'s family instead."""
    kind = FAMILIES[found.family][1]
    if found.layout == 'mmvitmix':
        return (f'; it is in mmvitmix\'s layout already: load it with '
                f'type={kind!r} (no conversion needed)')
    return f'; convert it with tools/model_converters/{found.converter}'


#: converter function name -> the families it converts
CONVERTER_FAMILIES = {
    'convert_rmt': ('RMT', ),
    'convert_rest': ('ResT', ),
    'convert_restv2': ('ResTV2', ),
    'convert_container': ('ContainerLight', ),
    'convert_riformer': ('RIFormer', ),
}
