"""Shared settings for the model tests: tiny CPU runs, reproducible, steady on a shared machine."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_cpu_runs():
    """Seed every test, run on one thread, and use PyTorch's native convolutions.

    - oneDNN (mkldnn) builds a new kernel for every new input shape, which costs seconds per shape on the
      tiny inputs these tests use; the native path starts at once. Results are the same to rounding.
    - On tensors this small a second thread saves nothing, and when the cores are busy the threads wait
      for each other at every one of the thousands of small ops (MSGA's tests ran 10x slower so).
    """
    torch.manual_seed(0)
    mkldnn, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
