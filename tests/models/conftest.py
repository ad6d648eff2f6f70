"""Shared settings for the model tests: tiny CPU runs, reproducible."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_cpu_runs():
    """Seed every test and run convolutions on PyTorch's native CPU path.

    oneDNN (mkldnn) builds a new kernel for every new input shape, which costs seconds per shape on the
    tiny inputs these tests use; the native path starts at once. Results are the same to rounding.
    """
    torch.manual_seed(0)
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = enabled
