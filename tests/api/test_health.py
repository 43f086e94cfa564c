from __future__ import annotations

import httpx


async def test_healthz_answers_without_any_dependency(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_503_naming_temporal_when_it_is_unreachable(api: httpx.AsyncClient) -> None:
    # The test settings point Temporal at port 1, where nothing listens.
    response = await api.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["temporal"].startswith("unreachable: ")
    assert len(body["checks"]["temporal"]) > len("unreachable: ")
