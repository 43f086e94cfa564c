"""A Temporal client the API connects lazily, so the API can start before the workflow engine."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from config import Settings, connect_temporal


class TemporalConnector:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        self.last_error = "not connected yet"

    async def get(self) -> Client | None:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect_temporal(self._settings), timeout=5)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        return self._client
