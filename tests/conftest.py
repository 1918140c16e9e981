"""Shared fixtures: locations of the read-only ../shared folder (skipped with a reason when absent)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALBEF_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared reference folder not found at {SHARED} (set ALBEF_SHARED to point at it)")
    return SHARED


@pytest.fixture(scope="session")
def real_data_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "real"
    if not path.is_dir():
        pytest.skip(f"real annotation files not found at {path}")
    return path


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    path = shared_dir / "reference"
    if not path.is_dir():
        pytest.skip(f"official reference fixtures not found at {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """Run the suite with one torch thread.

    The tests' models are tiny, so a second thread never pays; on a busy 2-core host every parallel operator
    also stalls at an OpenMP barrier for a descheduled thread (one module went from 10 s to 146 s that way).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped where no CUDA device is present (``pytest -m gpu`` runs them on one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
