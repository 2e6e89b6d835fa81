r"""The engine behind the official-checkpoint converters, and the
state-dict plumbing they share (:func:`unwrap_state_dict`,
:func:`strip_prefix_if_all`, :func:`check_all_consumed`).

A converter is a table of :class:`Rule` s, one line per official key family,
and a call to :func:`convert_state`::

    RULES = (
        drop_prefixes(('head.', )),  # the classifier, dropped on purpose
        Rule(r'patch_embed\.proj\.(.*)', 'stem.{0}'),
        # official 1-based stage k -> our stage k - 1
        Rule(r'stage([1-4])\.(\d+)\.mlp\.(.*)',
             'stages.{0}.blocks.{1}.ffn.{2}', groups={0: one_based}),
        Rule(r'blocks\.(\d+)\.gamma', 'blocks.{0}.gamma', transform=flat),
    )
    out = convert_state(state, RULES, 'convert_x',
                        already_converted=('stages.', ))

Every key goes through the first rule whose pattern matches it whole; a key
that no rule matches is an error (``KeyError`` naming the keys, see
:func:`check_all_consumed`), so nothing is lost silently. Values are
passed on as they are (the same tensor objects) unless the rule has a
``transform``.
"""
import logging
import re
from typing import (Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Union)

from mmengine.logging import print_log
from torch import Tensor

#: ``{group number: function}``: how a rule maps captured groups
GroupMaps = Mapping[int, Callable[[str], object]]

#: a rule target that drops the matched keys on purpose (classifier heads)
DROP = None


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


def one_based(index: str) -> int:
    """An official 1-based stage number (``stage1`` ... ``stage4``) as our
    0-based stage index."""
    return int(index) - 1


def flat(value: Tensor) -> Tensor:
    """A layer-scale / affine vector stored as (C, 1, 1) or (C, ) as (C, )
    (a view: the source tensor's storage is shared)."""
    return value.reshape(-1)


class Rule:
    """One line of a conversion table: an official key pattern -> our key.

    Args:
        pattern (str): regular expression that must match the *whole* key
            (``re.fullmatch``; ``.`` also matches a newline).
        target (str | None): our key, a ``str.format`` template filled with
            the pattern's groups in order (``{0}``, ``{1}``, ...). ``None``
            (:data:`DROP`) drops the key on purpose.
        transform (callable | None): ``tensor -> tensor`` applied to the
            value (e.g. :func:`flat`); None passes the tensor on unchanged.
        groups (dict | None): ``{group number: function}``: maps a captured
            group (a ``str``) before formatting, for index arithmetic
            (e.g. :func:`one_based`).
        note (str | None): for a dropping rule: log the keys it dropped as a
            warning ``'<converter>: <note>: [keys]'`` (after the leftover
            check). Without it a drop is silent.
    """

    def __init__(self,
                 pattern: str,
                 target: Optional[str],
                 transform: Optional[Callable[[Tensor], Tensor]] = None,
                 *,
                 groups: Optional[GroupMaps] = None,
                 note: Optional[str] = None):
        self.regex = re.compile(pattern, re.DOTALL)
        self.target = target
        self.transform = transform
        self.groups = dict(groups or {})
        self.note = note
        if target is None and transform is not None:
            raise ValueError(f'Rule({pattern!r}): a dropping rule has no '
                             'value to transform')
        if note is not None and target is not None:
            raise ValueError(f'Rule({pattern!r}): note is for dropping rules')
        bad = [g for g in self.groups if not 0 <= g < self.regex.groups]
        if bad:
            raise ValueError(f'Rule({pattern!r}): groups {bad} are not '
                             f'groups of the pattern')

    def __repr__(self) -> str:
        return f'Rule({self.regex.pattern!r}, {self.target!r})'

    def key(self, match: re.Match) -> str:
        """Our key for a matched official key."""
        values = list(match.groups())
        for index, fn in self.groups.items():
            values[index] = fn(values[index])
        return self.target.format(*values)


def drop_prefixes(prefixes: Sequence[str],
                  note: Optional[str] = None) -> Rule:
    """A rule dropping every key that starts with one of ``prefixes``."""
    alternatives = '|'.join(re.escape(p) for p in prefixes)
    return Rule(f'(?:{alternatives}).*', DROP, note=note)


def rename_rules(source: str,
                 target: str,
                 renames: Mapping[str, str],
                 groups: Optional[GroupMaps] = None) -> List[Rule]:
    r"""One rule per ``{old: new}`` sub-key prefix under a common parent.

    ``source + old + <rest>`` becomes ``target + new + <rest>``: ``source``
    is a regular expression (its groups fill ``target`` as in
    :class:`Rule`, mapped by ``groups``), ``old`` and ``new`` literal
    prefixes. E.g. ``rename_rules(r'layers\.(\d+)\.', 'stages.{0}.',
    {'mlp.': 'ffn.'})`` renames ``layers.2.mlp.fc1.weight`` to
    ``stages.2.ffn.fc1.weight``.
    """
    rest = re.compile(source).groups
    return [
        Rule(source + re.escape(old) + '(.*)',
             target + new.replace('{', '{{').replace('}', '}}') +
             f'{{{rest}}}',
             groups=groups) for old, new in renames.items()
    ]


def check_shapes(name: str, state: Mapping[str, Tensor],
                 expected_shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise ``ValueError`` naming every key of ``state`` whose shape
    differs from ``expected_shapes[key]`` (keys absent there are not
    checked)."""
    wrong = sorted(
        f'{key}: {tuple(value.shape)} != {tuple(expected_shapes[key])}'
        for key, value in state.items() if key in expected_shapes
        and tuple(value.shape) != tuple(expected_shapes[key]))
    if wrong:
        raise ValueError(f'{name}: shape mismatch for {len(wrong)} keys: '
                         f'{wrong[:20]}{" ..." if len(wrong) > 20 else ""}')


def convert_state(
        state: Mapping[str, Tensor],
        rules: Iterable[Rule],
        name: str,
        *,
        already_converted: Union[Sequence[str], Callable[[Mapping], bool],
                                 None] = None,
        expected_shapes: Optional[Mapping[str, Sequence[int]]] = None
) -> Dict[str, Tensor]:
    """Convert a flat official state dict with a rule table.

    Args:
        state (Mapping): ``{official key: tensor}`` (already unwrapped and
            stripped of any ``backbone.`` prefix).
        rules (Iterable[Rule]): the table; the first rule whose pattern
            matches a key decides it.
        name (str): the converter's name, used in errors and warnings.
        already_converted (Sequence[str] | callable | None): our layout's
            key prefixes (``state`` is in our layout when any key starts with
            one), or a predicate on ``state``; such a ``state`` is returned
            as it is (the same object).
        expected_shapes (Mapping | None): ``{our key: shape}``; a converted
            key listed there with another shape raises ``ValueError``.

    Returns:
        dict: ``{our key: tensor}``, in the order of ``state``.

    Raises:
        KeyError: keys that no rule matches (all of them, sorted).
    """
    rules = tuple(rules)
    if already_converted is not None:
        if callable(already_converted):
            done = already_converted(state)
        else:
            prefixes = tuple(already_converted)
            done = any(key.startswith(prefixes) for key in state)
        if done:
            if expected_shapes is not None:
                check_shapes(name, state, expected_shapes)
            return state
    out = {}
    leftover = []
    noted: Dict[str, List[str]] = {}
    for key, value in state.items():
        for rule in rules:
            match = rule.regex.fullmatch(key)
            if match is not None:
                break
        else:
            leftover.append(key)
            continue
        if rule.target is None:
            if rule.note is not None:
                noted.setdefault(rule.note, []).append(key)
            continue
        out[rule.key(match)] = (
            rule.transform(value) if rule.transform is not None else value)
    check_all_consumed(name, leftover)
    if expected_shapes is not None:
        check_shapes(name, out, expected_shapes)
    for note, keys in noted.items():
        print_log(
            f'{name}: {note}: {keys}', logger='current', level=logging.WARNING)
    return out
