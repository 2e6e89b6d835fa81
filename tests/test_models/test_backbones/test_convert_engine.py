"""The rule-table engine behind the official-checkpoint converters."""
import logging

import pytest
import torch

from mmvitmix.models.converters import (DROP, Rule, convert_state,
                                       drop_prefixes, flat, one_based,
                                       rename_rules)


def _state(*keys):
    return {key: torch.full((2, 1, 1), float(i)) for i, key in enumerate(keys)}


def test_first_matching_rule_wins_and_values_pass_through():
    state = _state('blocks.0.gamma', 'blocks.0.mlp.w', 'blocks.1.x')
    rules = (
        Rule(r'blocks\.(\d+)\.gamma', 'stages.{0}.scale', flat),
        Rule(r'blocks\.(\d+)\.mlp\.(.*)', 'stages.{0}.ffn.{1}'),
        Rule(r'blocks\.(\d+)\.mlp\.(.*)', 'never.{0}.{1}'),  # shadowed
        Rule(r'blocks\.(\d+)\.(.*)', 'stages.{0}.other.{1}'),
    )
    out = convert_state(state, rules, 'convert_test')
    assert list(out) == [
        'stages.0.scale', 'stages.0.ffn.w', 'stages.1.other.x'
    ]
    # renames pass the very tensor on; a transform may give a view
    assert out['stages.0.ffn.w'] is state['blocks.0.mlp.w']
    assert out['stages.0.scale'].shape == (2, )
    assert (out['stages.0.scale'].data_ptr() ==
            state['blocks.0.gamma'].data_ptr())


def test_patterns_match_whole_keys_and_groups_map_indices():
    rules = (Rule(r'stage([1-4])\.(\d+)', 'stages.{0}.blocks.{1}',
                  groups={0: one_based}), )
    out = convert_state(_state('stage1.0', 'stage4.7'), rules, 'convert_test')
    assert list(out) == ['stages.0.blocks.0', 'stages.3.blocks.7']
    # no prefix match: 'stage1.0.extra' is not covered by 'stage1.0'
    with pytest.raises(KeyError, match='stage1.0.extra'):
        convert_state(_state('stage1.0.extra'), rules, 'convert_test')


def test_drops_are_silent_or_noted():
    from mmengine.logging import MMLogger
    rules = (
        drop_prefixes(('head.', 'neck.')),
        Rule(r'headless\.(.*)', 'kept.{0}'),  # not under the prefix 'head.'
        Rule(r'norm([13])\..*', DROP, note='odd norms dropped'),
        Rule(r'norm([02])\.(.*)', 'norm{0}.{1}'),
    )
    records = []

    class Handler(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Handler()
    logger.addHandler(handler)
    try:
        out = convert_state(
            _state('head.fc.w', 'neck.x', 'headless.w', 'norm0.w', 'norm1.w',
                   'norm3.b'), rules, 'convert_test')
    finally:
        logger.removeHandler(handler)
    assert list(out) == ['kept.w', 'norm0.w']
    assert records == [
        "convert_test: odd norms dropped: ['norm1.w', 'norm3.b']"
    ]


def test_leftover_keys_are_a_key_error_naming_them_all():
    rules = (Rule(r'a\.(.*)', 'b.{0}'), )
    with pytest.raises(KeyError) as info:
        convert_state(_state('a.w', 'z.2', 'y.1'), rules, 'convert_test')
    assert str(info.value) == (
        '"convert_test: no conversion rule for keys [\'y.1\', \'z.2\']"')


def test_already_converted_input_is_returned_as_it_is():
    rules = (Rule(r'layers\.(.*)', 'stages.{0}'), )
    ours = _state('stages.0.w', 'norm0.w')
    assert convert_state(ours, rules, 'convert_test',
                         already_converted=('stem.', 'stages.')) is ours
    assert convert_state(ours, rules, 'convert_test',
                         already_converted=lambda s: 'norm0.w' in s) is ours
    # without the detection it is just an unknown layout
    with pytest.raises(KeyError, match='norm0.w'):
        convert_state(ours, rules, 'convert_test')
    official = _state('layers.0.w')
    assert list(
        convert_state(official, rules, 'convert_test',
                      already_converted=('stages.', ))) == ['stages.0.w']


def test_shape_check():
    rules = (Rule(r'a\.(.*)', 'b.{0}'), )
    state = _state('a.w', 'a.v')
    out = convert_state(state, rules, 'convert_test',
                        expected_shapes={'b.w': (2, 1, 1), 'other': (3, )})
    assert list(out) == ['b.w', 'b.v']  # keys absent from the table: free
    with pytest.raises(ValueError, match=r'b\.w: \(2, 1, 1\) != \(2,\)'):
        convert_state(state, rules, 'convert_test',
                      expected_shapes={'b.w': (2, )})
    # also for input that is already in our layout
    with pytest.raises(ValueError, match='convert_test: shape mismatch'):
        convert_state(_state('b.w'), rules, 'convert_test',
                      already_converted=('b.', ),
                      expected_shapes={'b.w': [5]})


def test_rename_rules():
    rules = rename_rules(r'layers\.(\d+)\.blocks\.([^.]+)\.',
                         'stages.{0}.{1}.', {
                             'ffn.fc1.': 'mlp.fc1.',
                             'pos.': 'cpe.'
                         },
                         groups={0: lambda i: int(i) + 1})
    out = convert_state(
        _state('layers.0.blocks.3.ffn.fc1.weight', 'layers.2.blocks.0.pos.b'),
        rules, 'convert_test')
    assert list(out) == ['stages.1.3.mlp.fc1.weight', 'stages.3.0.cpe.b']
    with pytest.raises(KeyError, match='layers.0.blocks.0.ffn.fc2.w'):
        convert_state(_state('layers.0.blocks.0.ffn.fc2.w'), rules, 'x')


def test_rule_validation():
    with pytest.raises(ValueError, match='not groups of the pattern'):
        Rule(r'a\.(\d+)', 'b.{0}', groups={1: int})
    with pytest.raises(ValueError, match='no value to transform'):
        Rule(r'a', DROP, flat)
    with pytest.raises(ValueError, match='dropping rules'):
        Rule(r'a', 'b', note='why')
