"""A last resort behind pytest-timeout, so one stuck test can never hold the whole run.

pytest-timeout fails a test with SIGALRM, which Python handles only between bytecodes of the main
thread: a test stuck in a native call that never returns, or in a teardown after its alarm has fired,
is never interrupted, and the run waits until CI kills it with nothing said. Here a C-level timer
outlives both: past the test's timeout and a grace it writes every thread's stack to the real stderr
and ends the test process. Under xdist the controller reports the crashed worker's test as failed and
carries on with a new worker; the stacks say where it hung.
"""

from __future__ import annotations

import faulthandler
import os
from collections.abc import Generator

import pytest

GRACE_SECONDS = 60.0
# After the last test, only results and interpreter shutdown are left; a process still alive by then
# is waiting on a thread that will not end.
EXIT_SECONDS = 120.0

_stderr = pytest.StashKey[int]()


def _timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    # As pytest-timeout reads it: the marker, then --timeout, then the ini file.
    given = item.config.getoption("timeout", None)
    return float(given if given is not None else item.config.getini("timeout") or 0)


def pytest_configure(config: pytest.Config) -> None:
    # Capture is suspended while plugins are configured, so fd 2 is the process's own stderr here.
    config.stash[_stderr] = os.dup(2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    timeout = _timeout(item)
    if timeout <= 0:
        return (yield)
    faulthandler.dump_traceback_later(timeout + GRACE_SECONDS, exit=True, file=item.config.stash[_stderr])
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    faulthandler.dump_traceback_later(EXIT_SECONDS, exit=True, file=session.config.stash[_stderr])
