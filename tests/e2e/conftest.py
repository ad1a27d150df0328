"""The whole local stack for the end-to-end tests: `python -m devstack` on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.client import StackProcess

# Health checks that wait for a slow moto on a busy machine rather than call
# it failing (the defaults: 2 s per check, 0.5 s for the cache's store).
PATIENT_HEALTH = {"VIDLINE_HEALTH_CHECK_TIMEOUT_S": "10", "VIDLINE_CACHE_TIMEOUT_S": "5"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """A stack for one test module, stopped after it; it must have stopped cleanly."""
    with StackProcess(tmp_path_factory.mktemp("stack") / "stack.log", env=PATIENT_HEALTH) as running:
        yield running
    assert running.exit_code == 0, running.log_tail()
