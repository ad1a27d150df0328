"""The whole local stack for the end-to-end tests: `python -m devstack` on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.client import StackProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """A stack for one test module, stopped after it; it must have stopped cleanly."""
    with StackProcess(tmp_path_factory.mktemp("stack") / "stack.log") as running:
        yield running
    assert running.exit_code == 0, running.log_tail()
