"""Heartbeats for activities that block on a runtime, object storage or SMTP.

A heartbeat tells the server the worker is alive, so a worker killed mid-call has its activity retried
within the heartbeat timeout instead of the start-to-close timeout; and it is the only way the server can
deliver a cancellation (a delete, the project's shutdown) to a running activity. The blocking clients give
no place to heartbeat from inside a call, so a small thread beats beside the call while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

from temporalio import activity

# Every activity that talks to a runtime, storage or SMTP is scheduled with this heartbeat timeout;
# the worker sends at most one heartbeat per HEARTBEAT_THROTTLE, so cancellations arrive that quickly.
HEARTBEAT_TIMEOUT = timedelta(seconds=20)
HEARTBEAT_THROTTLE = timedelta(seconds=2)
BEAT_SECONDS = 1.0


@contextlib.contextmanager
def heartbeating(every: float = BEAT_SECONDS) -> Iterator[None]:
    """Heartbeat every `every` seconds while the block runs (outside an activity: nothing)."""
    if not activity.in_activity():
        yield
        return
    context = contextvars.copy_context()  # the activity's context, where heartbeat() finds its activity
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            context.run(activity.heartbeat)

    # The first beat after a second: most calls end sooner and cost the server no heartbeat at all.
    thread = threading.Thread(target=beat, name="mlcp-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.asynccontextmanager
async def heartbeating_async(every: float = BEAT_SECONDS) -> AsyncIterator[None]:
    """The same for async activities: a task beats beside the awaited call."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def not_interrupted() -> Iterator[None]:
    """A step that must finish once begun (start a process and record it): a cancellation waits for its end.

    Cancelling a synchronous activity raises inside its thread at any line; inside this block the raise is
    held back until the block is done. Outside an activity it does nothing.
    """
    if not activity.in_activity():
        yield
        return
    with activity.shield_thread_cancel_exception():
        yield
