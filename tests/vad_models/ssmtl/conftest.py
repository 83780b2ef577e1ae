"""One torch thread for these tests: on a shared 2-core machine, OpenMP's spinning intra-op threads make tiny
convolutions over 20x slower under load (measured: 3.5 s vs 0.13 s per smoke training step)."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
