from __future__ import annotations

from datetime import UTC, datetime

from models.lifecycle import AdmitRequest, LedgerEntry, Quota
from workflows.ledger import QuotaLedger

NOW = datetime(2027, 1, 1, tzinfo=UTC)
LIMIT = Quota(gpu=4, vcpu=16, ram_gb=64, storage_gb=100)


def request(resource_id: str, gpu: int, vcpu: float = 1, ram_gb: float = 1) -> AdmitRequest:
    return AdmitRequest(
        resource_id=resource_id,
        kind="container",
        workflow_id=f"container-{resource_id}",
        owner_id="u1",
        request=Quota(gpu=gpu, vcpu=vcpu, ram_gb=ram_gb),
    )


def test_admits_until_short_then_queues_with_position_and_reason() -> None:
    ledger = QuotaLedger([])
    assert ledger.admit(request("a", 3), LIMIT, NOW).admitted
    queued = ledger.admit(request("b", 2), LIMIT, NOW)
    assert not queued.admitted
    assert queued.position == 1
    assert queued.reason == "waiting for resources: 1 GPU short"
    second = ledger.admit(request("c", 1), LIMIT, NOW)
    # c would fit, but first come, first served keeps it behind b.
    assert (second.admitted, second.position) == (False, 2)
    panel = ledger.panel(LIMIT)
    assert panel.in_flight.gpu == 3 and panel.requested.gpu == 3 and panel.remaining.gpu == 1
    assert [e.resource_id for e in panel.queue] == ["b", "c"]


def test_admit_is_idempotent_on_resource_id() -> None:
    ledger = QuotaLedger([])
    ledger.admit(request("a", 4), LIMIT, NOW)
    first = ledger.admit(request("b", 1), LIMIT, NOW)
    again = ledger.admit(request("b", 1), LIMIT, NOW)
    assert first == again
    assert len(ledger.entries) == 2


def test_release_admits_the_queue_in_order() -> None:
    ledger = QuotaLedger([])
    ledger.admit(request("a", 3), LIMIT, NOW)
    ledger.admit(request("b", 2), LIMIT, NOW)
    ledger.admit(request("c", 2), LIMIT, NOW)
    admitted = ledger.release("a", LIMIT)
    assert [e.resource_id for e in admitted] == ["b", "c"]
    assert ledger.panel(LIMIT).remaining.gpu == 0
    assert ledger.release("unknown", LIMIT) == []


def test_running_moves_from_in_flight_to_in_use() -> None:
    ledger = QuotaLedger([])
    ledger.admit(request("a", 1, vcpu=2.5, ram_gb=8), LIMIT, NOW)
    ledger.mark_running("a")
    panel = ledger.panel(LIMIT)
    assert panel.in_use == Quota(gpu=1, vcpu=2.5, ram_gb=8)
    assert panel.in_flight == Quota()
    assert panel.remaining.vcpu == 13.5


def test_raised_limit_admits_waiting_requests() -> None:
    entries: list[LedgerEntry] = []
    ledger = QuotaLedger(entries)
    ledger.admit(request("a", 4), LIMIT, NOW)
    ledger.admit(request("b", 2), LIMIT, NOW)
    assert [e.resource_id for e in ledger.admit_from_queue(LIMIT + Quota(gpu=2))] == ["b"]
    assert entries is ledger.entries


def test_exceeds_limit_names_what_is_missing() -> None:
    assert QuotaLedger([]).exceeds_limit(Quota(gpu=6, ram_gb=80), LIMIT) == ["2 GPU", "16 GB RAM"]
