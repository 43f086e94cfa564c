"""Per-second rates from counters that only grow (CPU seconds, bytes sent), as every sampler needs them."""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class CounterRates:
    """Remembers each counter's last reading; a rate needs two. A counter that went backwards (its process
    restarted) starts over rather than giving a negative rate."""

    def __init__(self) -> None:
        self._last: dict[tuple[Hashable, str], tuple[float, float]] = {}

    def rate(self, owner: Hashable, counter: str, at: float, value: float) -> float | None:
        """The growth per second of `owner`'s (a pod's) `counter` since its last reading, read now at `at`
        (monotonic seconds); None for the first reading, a reset, or no time passed."""
        key = (owner, counter)
        previous = self._last.get(key)
        self._last[key] = (at, value)
        if previous is None:
            return None
        elapsed, grown = at - previous[0], value - previous[1]
        if elapsed <= 0 or grown < 0:
            return None
        return grown / elapsed

    def keep_only(self, owners: Iterable[Hashable]) -> None:
        """Forget the counters of pods that are gone, so memory stays bounded."""
        wanted = set(owners)
        for key in list(self._last):
            if key[0] not in wanted:
                del self._last[key]
