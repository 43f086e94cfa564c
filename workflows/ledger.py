"""The project quota ledger: pure, deterministic bookkeeping owned by one ProjectWorkflow.

Admission is strictly first come, first served: a request that would fit still queues behind an
earlier one that does not, so a large request is never starved by a stream of small ones.
"""

from __future__ import annotations

from datetime import datetime

from models.lifecycle import AdmitRequest, AdmitResult, LedgerEntry, Quota, QuotaPanel

QUEUED, STARTING, RUNNING = "queued", "starting", "running"


def _entry(request: AdmitRequest, state: str, now: datetime) -> LedgerEntry:
    return LedgerEntry(
        resource_id=request.resource_id,
        kind=request.kind,
        workflow_id=request.workflow_id,
        owner_id=request.owner_id,
        request=request.request,
        state=state,
        queued_at=now,
    )


class QuotaLedger:
    def __init__(self, entries: list[LedgerEntry]) -> None:
        self.entries = entries  # shared with ProjectState, so continue-as-new carries it

    def get(self, resource_id: str) -> LedgerEntry | None:
        return next((e for e in self.entries if e.resource_id == resource_id), None)

    def _sum(self, *states: str) -> Quota:
        total = Quota()
        for entry in self.entries:
            if entry.state in states:
                total = total + entry.request
        return total

    def queue(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.state == QUEUED]

    def available(self, limit: Quota) -> Quota:
        return limit - self._sum(STARTING, RUNNING)

    def result_for(self, entry: LedgerEntry) -> AdmitResult:
        if entry.state != QUEUED:
            return AdmitResult(admitted=True)
        position = self.queue().index(entry) + 1
        return AdmitResult(admitted=False, position=position, reason=entry.reason)

    def exceeds_limit(self, request: Quota, limit: Quota) -> list[str]:
        """What a request asks beyond the whole quota: such a request could never be admitted."""
        return request.shortfall(limit)

    def admit(self, request: AdmitRequest, limit: Quota, now: datetime) -> AdmitResult:
        existing = self.get(request.resource_id)
        if existing is not None:  # a retried admit answers the same
            return self.result_for(existing)
        entry = _entry(request, QUEUED, now)
        self.entries.append(entry)
        self.admit_from_queue(limit)
        return self.result_for(entry)

    def hold(self, request: AdmitRequest, limit: Quota, now: datetime) -> list[str]:
        """Reserve at once, beside the queue, or not at all: what is short, empty when it was held.

        For storage a volume holds while it exists: it has nothing to wait for, so it never queues. A held
        resource asking again is resized to the new request, its old reservation counted as available.
        """
        existing = self.get(request.resource_id)
        available = self.available(limit) + (existing.request if existing is not None else Quota())
        short = request.request.shortfall(available)
        if short:
            return short
        if existing is not None:
            existing.request = request.request
        else:
            self.entries.append(_entry(request, RUNNING, now))
        return []

    def release(self, resource_id: str, limit: Quota) -> list[LedgerEntry]:
        """Free a reservation (or drop a queued request); return the entries this admits."""
        self.entries[:] = [e for e in self.entries if e.resource_id != resource_id]
        return self.admit_from_queue(limit)

    def mark_running(self, resource_id: str) -> None:
        entry = self.get(resource_id)
        if entry is not None and entry.state == STARTING:
            entry.state = RUNNING

    def admit_from_queue(self, limit: Quota) -> list[LedgerEntry]:
        admitted: list[LedgerEntry] = []
        for entry in self.queue():
            short = entry.request.shortfall(self.available(limit))
            if short:
                entry.reason = "waiting for resources: " + ", ".join(short) + " short"
                break
            entry.state, entry.reason = STARTING, ""
            admitted.append(entry)
        waiting = self.queue()
        for position, entry in enumerate(waiting, start=1):
            if position > 1:
                entry.reason = f"waiting behind {position - 1} earlier request(s)"
        return admitted

    def panel(self, limit: Quota) -> QuotaPanel:
        in_use, in_flight = self._sum(RUNNING), self._sum(STARTING)
        return QuotaPanel(
            limit=limit,
            in_use=in_use,
            in_flight=in_flight,
            requested=self._sum(QUEUED),
            remaining=limit - in_use - in_flight,
            queue=self.queue(),
        )
