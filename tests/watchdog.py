"""Time limits that end a stuck test cleanly where they can and for certain where they cannot, so one
test can never hold the whole run.

pytest-timeout fails a test with SIGALRM, which Python handles only between bytecodes of the main
thread. Two ways that goes wrong, each with its own remedy here:

- An async test is stopped between two turns of the event loop, not inside its coroutine: its task is
  left behind in the session's loop with its workers and `async with` blocks never closed, and it runs
  on under whatever tests come next. So an async test is first cancelled from inside, a little before
  the alarm: its cleanups run, and the failure shows the line it was waiting on.
- A test stuck in a native call that never returns, or in a teardown after its alarm has fired, is never
  interrupted, and the run waits until CI kills it with nothing said. So a C-level timer outlives both:
  past the test's timeout and a grace it writes every thread's stack to the real stderr and ends the
  test process. Under xdist the controller reports the crashed worker's test as failed and carries on
  with a new worker; the stacks say where it hung.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import inspect
import os
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

CANCEL_MARGIN_SECONDS = 30.0  # before the alarm, so a cleanup that hangs still meets it
GRACE_SECONDS = 60.0
# After the last test, only results and interpreter shutdown are left; a process still alive by then
# is waiting on a thread that will not end.
EXIT_SECONDS = 120.0

_stderr = pytest.StashKey[int]()

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    # As pytest-timeout reads it: the marker, then --timeout, then the ini file.
    given = item.config.getoption("timeout", None)
    return float(given if given is not None else item.config.getini("timeout") or 0)


def _cancelled_after(test: AsyncTest, seconds: float) -> AsyncTest:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        budget = asyncio.timeout(seconds)
        try:
            async with budget:
                return await test(*args, **kwargs)
        except TimeoutError:
            if not budget.expired():
                raise  # the test's own
            pytest.fail(f"cancelled after {seconds:.0f} s; the traceback above shows where it waited")

    return bounded


def pytest_configure(config: pytest.Config) -> None:
    # Capture is suspended while plugins are configured, so fd 2 is the process's own stderr here.
    config.stash[_stderr] = os.dup(2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            seconds = _timeout(item) - CANCEL_MARGIN_SECONDS
            if seconds > 0:
                item.obj = _cancelled_after(item.obj, seconds)


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
