"""Official-checkpoint conversion, in one place.

* :mod:`.engine`: the rule tables the backbones' converters are written in
  (:class:`Rule`, :func:`convert_state`) and the state-dict plumbing
  (:func:`unwrap_state_dict`, :func:`strip_prefix_if_all`,
  :func:`check_all_consumed`);
* :mod:`.files`: converting a checkpoint file into a file
  (:func:`load_source`, :func:`convert_file`) and the command line of
  ``tools/model_converters/<arch>2mmvitmix.py`` (:func:`main`);
* :mod:`.identify`: what a checkpoint is (family, layout, the ``arch`` its
  shapes fit): :func:`identify`, :func:`describe_checkpoint`.

The converters themselves (``convert_rmt`` & co.) live beside their
backbones; :mod:`mmvitmix.models.utils` re-exports them.
"""
from .engine import (DROP, Rule, check_all_consumed, check_shapes,
                     convert_state, drop_prefixes, flat, one_based,
                     rename_rules, strip_prefix_if_all, unwrap_state_dict)
from .files import check_source_family, convert_file, load_source, main
from .identify import CheckpointIdentity, describe_checkpoint, identify

__all__ = [
    'DROP', 'Rule', 'check_all_consumed', 'check_shapes', 'convert_state',
    'drop_prefixes', 'flat', 'one_based', 'rename_rules',
    'strip_prefix_if_all', 'unwrap_state_dict', 'convert_file', 'load_source',
    'main', 'check_source_family', 'CheckpointIdentity',
    'describe_checkpoint', 'identify'
]
