"""mmvitmix.testing, the checks the tests and the GPU acceptance script
share: each passes on a correct result and fails on a wrong one."""
import pytest
import torch

from mmvitmix import testing


def test_assert_close_rel_is_relative_to_the_scale():
    expected = torch.linspace(-100, 100, 50)
    testing.assert_close_rel(expected + 1e-4, expected, 1e-5)
    with pytest.raises(AssertionError, match='max abs error'):
        testing.assert_close_rel(expected + 1e-2, expected, 1e-5)
    with pytest.raises(AssertionError):  # shapes differ
        testing.assert_close_rel(expected[:-1], expected, 1e-5)
    # an all-zero expectation is checked against the absolute floor
    testing.assert_close_rel(torch.full((3, ), 1e-10), torch.zeros(3), 1e-5)
    with pytest.raises(AssertionError):
        testing.assert_close_rel(torch.full((3, ), 1e-3), torch.zeros(3),
                                 1e-5)


def test_rel_err():
    want = torch.tensor([3., 4.])
    assert testing.rel_err(want, want) == 0
    assert testing.rel_err(want * 1.1, want) == pytest.approx(0.1)
    assert testing.rel_err(torch.tensor([float('nan'), 4.]),
                           want) == float('inf')


def _off_by_a_percent(monkeypatch, module, name):
    """Make every backend but the reference return 1.01 x its output."""
    real = getattr(module, name)

    def wrong(*args, backend=None, **kwargs):
        out = real(*args, backend=backend, **kwargs)
        return out if backend == 'reference' else out * 1.01

    monkeypatch.setattr(module, name, wrong)


@pytest.mark.parametrize('decomposed', [True, False])
def test_retention_error_passes_a_backend_and_catches_a_wrong_one(
        decomposed, monkeypatch):
    from mmvitmix.ops import retention
    shape = (2, 2, 5, 7, 8, 8)
    assert testing.retention_error('sdpa', shape, decomposed=decomposed) < 1e-5
    _off_by_a_percent(monkeypatch, retention, 'retention_attention')
    assert testing.retention_error(
        'sdpa', shape, decomposed=decomposed) == pytest.approx(
            1e-2, rel=1e-3)


@pytest.mark.parametrize('mixed', [True, False])
def test_emsa_error_passes_a_backend_and_catches_a_wrong_one(
        mixed, monkeypatch):
    from mmvitmix.ops import emsa
    size = (2, 23, 7, 8)
    assert testing.emsa_error('sdpa', mixed, size=size) < 1e-5
    _off_by_a_percent(monkeypatch, emsa, 'emsa_attention')
    assert testing.emsa_error('sdpa', mixed, size=size) == pytest.approx(
        1e-2, rel=1e-3)
