"""Fixtures for the micro-benchmarks: the device they run on, fixed seeds, and torch in the saved machine info."""

from __future__ import annotations

import pytest
import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    # A saved run says which torch, threads and accelerator produced it; --benchmark-compare warns when these differ.
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
