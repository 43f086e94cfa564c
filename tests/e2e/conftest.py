from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import MLCP, DevStack, Ports


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    """A stack not yet started, with its own home folder and ports; nothing of it outlives the test."""
    if not MLCP.exists():
        pytest.fail(f"{MLCP} is missing: install the project first (make run or pip install -e '.[dev]')")
    stack = DevStack(home=tmp_path / "home", ports=Ports.free())
    yield stack
    stack.kill_leftovers()
