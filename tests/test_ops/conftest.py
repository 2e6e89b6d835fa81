import pytest

from .cuda_emulation import host_kernels as _host_kernels


@pytest.fixture
def host_kernels():
    """The CUDA ops' host code and kernels registered as their CPU kernels
    for one test (the build is cached) (see tests/test_ops/cuda_emulation)."""
    with _host_kernels() as emu:
        yield emu
