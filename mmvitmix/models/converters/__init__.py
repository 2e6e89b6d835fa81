"""Official-checkpoint conversion, in one place.

* :mod:`.engine`: the rule tables the backbones' converters are written in
  (:class:`Rule`, :func:`convert_state`) and the state-dict plumbing
  (:func:`unwrap_state_dict`, :func:`strip_prefix_if_all`,
  :func:`check_all_consumed`);
* :mod:`.files`: converting a checkpoint file into a file
  (:func:`load_source`, :func:`convert_file`) and the command line of
  ``tools/model_converters/<arch>2mmvitmix.py`` (:func:`main`).

The converters themselves (``convert_rmt`` & co.) live beside their
backbones; :mod:`mmvitmix.models.utils` re-exports them.
"""
from .engine import (DROP, Rule, check_all_consumed, check_shapes,
                     convert_state, drop_prefixes, flat, one_based,
                     rename_rules, strip_prefix_if_all, unwrap_state_dict)
from .files import convert_file, load_source, main

__all__ = [
    'DROP', 'Rule', 'check_all_consumed', 'check_shapes', 'convert_state',
    'drop_prefixes', 'flat', 'one_based', 'rename_rules',
    'strip_prefix_if_all', 'unwrap_state_dict', 'convert_file', 'load_source',
    'main'
]
