"""Shared settings for the training tests: one CPU thread, native convolutions, seeded."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_cpu_runs():
    """Run the tiny networks single-threaded on PyTorch's native CPU path.

    On a loaded 2-core machine two threads per tiny convolution are many times slower than one (each waits
    on a busy core); oneDNN builds a kernel per new input shape, which costs seconds on tiny inputs.
    """
    torch.manual_seed(0)
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
