from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, delete, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models.catalog import GpuModel, Purpose, Spec, seed_default_catalog

CATALOG = "/api/v1/catalog"
Headers = dict[str, str]


async def _create(api: httpx.AsyncClient, headers: Headers, resource: str, **body: Any) -> dict[str, Any]:
    response = await api.post(f"{CATALOG}/{resource}", headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _gpu(
    api: httpx.AsyncClient, headers: Headers, name: str = "A100-80G", **extra: Any
) -> dict[str, Any]:
    return await _create(api, headers, "gpu-models", name=name, vendor="NVIDIA", memory_gb=80, **extra)


async def _spec(api: httpx.AsyncClient, headers: Headers, name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"vcpu": 4, "ram_gb": 16, "hourly_price": "10"} | extra
    return await _create(api, headers, "specs", name=name, **body)


def _assert_error(response: httpx.Response, status: int, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json().get("field") == field, response.text


# --- GPU models ---------------------------------------------------------------------------------------


async def test_gpu_model_round_trip(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    created = await _gpu(api, admin_headers, shareable=True, description="  datacenter  ")
    assert created["vendor"] == "NVIDIA" and created["memory_gb"] == 80 and created["shareable"] is True
    assert created["description"] == "datacenter"

    by_id = await api.get(f"{CATALOG}/gpu-models/{created['id']}", headers=admin_headers)
    by_name = await api.get(f"{CATALOG}/gpu-models/A100-80G", headers=admin_headers)
    assert by_id.json() == by_name.json() == created

    patched = await api.patch(
        f"{CATALOG}/gpu-models/{created['id']}",
        headers=admin_headers,
        json={"memory_gb": 40, "name": "A100-40G"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["memory_gb"] == 40 and patched.json()["name"] == "A100-40G"
    assert patched.json()["updated_at"] >= created["updated_at"]

    assert (
        await api.delete(f"{CATALOG}/gpu-models/{created['id']}", headers=admin_headers)
    ).status_code == 204
    _assert_error(await api.get(f"{CATALOG}/gpu-models/{created['id']}", headers=admin_headers), 404, None)


async def test_gpu_model_validation_names_the_field(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    base = {"name": "X", "vendor": "NVIDIA", "memory_gb": 8}
    for field, value in [("memory_gb", 0), ("memory_gb", -8), ("vendor", "Intel"), ("name", "   ")]:
        response = await api.post(f"{CATALOG}/gpu-models", headers=admin_headers, json=base | {field: value})
        _assert_error(response, 422, field)
    gpu = await _gpu(api, admin_headers)
    nulled = await api.patch(
        f"{CATALOG}/gpu-models/{gpu['id']}", headers=admin_headers, json={"vendor": None}
    )
    _assert_error(nulled, 422, "vendor")


async def test_names_are_unique_per_resource(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    await _gpu(api, admin_headers)
    other = await _gpu(api, admin_headers, name="V100-32G")
    duplicate = await api.post(
        f"{CATALOG}/gpu-models",
        headers=admin_headers,
        json={"name": "A100-80G", "vendor": "AMD", "memory_gb": 1},
    )
    _assert_error(duplicate, 409, "name")
    renamed = await api.patch(
        f"{CATALOG}/gpu-models/{other['id']}", headers=admin_headers, json={"name": "A100-80G"}
    )
    _assert_error(renamed, 409, "name")
    # Keeping one's own name is not a clash.
    same = await api.patch(f"{CATALOG}/gpu-models/A100-80G", headers=admin_headers, json={"name": "A100-80G"})
    assert same.status_code == 200

    await _spec(api, admin_headers, "cpu-small")
    _assert_error(
        await api.post(
            f"{CATALOG}/specs",
            headers=admin_headers,
            json={"name": "cpu-small", "vcpu": 1, "ram_gb": 1, "hourly_price": 0},
        ),
        409,
        "name",
    )
    await _create(api, admin_headers, "purposes", name="研究")
    _assert_error(
        await api.post(f"{CATALOG}/purposes", headers=admin_headers, json={"name": " 研究 "}), 409, "name"
    )
    # The same name in a different resource is fine.
    await _create(api, admin_headers, "purposes", name="cpu-small")


# --- specs --------------------------------------------------------------------------------------------


async def test_spec_round_trip_with_gpu_model(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    gpu = await _gpu(api, admin_headers)
    created = await _spec(
        api,
        admin_headers,
        "a100x2",
        gpu_model_id=gpu["id"],
        gpu_count=2,
        vcpu=0.5,
        ram_gb=0.5,
        hourly_price="300.5",
        currency="USD",
        description="two GPUs",
    )
    assert created["gpu_model_id"] == gpu["id"] and created["gpu_model_name"] == "A100-80G"
    assert created["gpu_count"] == 2 and created["vcpu"] == 0.5 and created["ram_gb"] == 0.5
    assert (
        created["hourly_price"] == "300.50" and created["currency"] == "USD" and created["is_active"] is True
    )

    read = await api.get(f"{CATALOG}/specs/a100x2", headers=admin_headers)
    assert read.json() == created

    retired = await api.patch(
        f"{CATALOG}/specs/{created['id']}", headers=admin_headers, json={"is_active": False}
    )
    assert retired.status_code == 200 and retired.json()["is_active"] is False

    # Back to CPU only: both the model and the count change together.
    cpu = await api.patch(
        f"{CATALOG}/specs/{created['id']}", headers=admin_headers, json={"gpu_model_id": None, "gpu_count": 0}
    )
    assert cpu.status_code == 200, cpu.text
    assert cpu.json()["gpu_model_id"] is None and cpu.json()["gpu_model_name"] is None

    assert (await api.delete(f"{CATALOG}/specs/{created['id']}", headers=admin_headers)).status_code == 204
    _assert_error(await api.get(f"{CATALOG}/specs/{created['id']}", headers=admin_headers), 404, None)


async def test_spec_defaults_to_twd_and_keeps_price_exactly(
    api: httpx.AsyncClient, admin_headers: Headers, engine: Engine
) -> None:
    created = await _spec(api, admin_headers, "precise", hourly_price="0.1234")
    assert created["currency"] == "TWD"
    assert created["hourly_price"] == "0.1234"
    from_number = await _spec(api, admin_headers, "from-number", hourly_price=12345678.01)
    assert from_number["hourly_price"] == "12345678.01"
    with Session(engine) as session:
        stored = session.exec(select(Spec).where(Spec.name == "precise")).one().hourly_price
        assert stored == Decimal("0.1234")
        # Ten cheap hours add up exactly, as cost reports need.
        assert stored * 10 == Decimal("1.234")
        raw = session.execute(text("SELECT hourly_price FROM spec WHERE name = 'precise'")).scalar_one()
        assert raw == 1234

    listed = await api.get(f"{CATALOG}/specs", headers=admin_headers, params={"name": "precise"})
    assert listed.json()["items"][0]["hourly_price"] == "0.1234"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vcpu", 0),
        ("vcpu", -1),
        ("vcpu", 0.0001),
        ("ram_gb", 0),
        ("hourly_price", "-1"),
        ("hourly_price", "1.00001"),
        ("hourly_price", "NaN"),
        ("hourly_price", "lots"),
        ("gpu_count", -1),
        ("currency", "twd"),
        ("currency", "EURO"),
        ("name", ""),
    ],
)
async def test_spec_validation_names_the_field(
    api: httpx.AsyncClient, admin_headers: Headers, field: str, value: Any
) -> None:
    body = {"name": "s", "vcpu": 1, "ram_gb": 1, "hourly_price": "1"} | {field: value}
    _assert_error(await api.post(f"{CATALOG}/specs", headers=admin_headers, json=body), 422, field)


async def test_spec_gpu_model_must_exist_and_match_the_count(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    base = {"name": "s", "vcpu": 1, "ram_gb": 1, "hourly_price": "1"}
    missing = await api.post(
        f"{CATALOG}/specs", headers=admin_headers, json=base | {"gpu_model_id": "nosuchgpu", "gpu_count": 1}
    )
    _assert_error(missing, 422, "gpu_model_id")
    assert "does not exist" in missing.json()["message"]
    no_model = await api.post(f"{CATALOG}/specs", headers=admin_headers, json=base | {"gpu_count": 2})
    _assert_error(no_model, 422, "gpu_model_id")
    gpu = await _gpu(api, admin_headers)
    no_count = await api.post(
        f"{CATALOG}/specs", headers=admin_headers, json=base | {"gpu_model_id": gpu["id"]}
    )
    _assert_error(no_count, 422, "gpu_count")

    spec = await _spec(api, admin_headers, "one", gpu_model_id=gpu["id"], gpu_count=1)
    patch_url = f"{CATALOG}/specs/{spec['id']}"
    _assert_error(await api.patch(patch_url, headers=admin_headers, json={"gpu_count": 0}), 422, "gpu_count")
    _assert_error(
        await api.patch(patch_url, headers=admin_headers, json={"gpu_model_id": None}), 422, "gpu_model_id"
    )
    _assert_error(
        await api.patch(patch_url, headers=admin_headers, json={"gpu_model_id": "gone"}), 422, "gpu_model_id"
    )
    _assert_error(await api.patch(patch_url, headers=admin_headers, json={"vcpu": None}), 422, "vcpu")
    unchanged = await api.get(patch_url, headers=admin_headers)
    assert unchanged.json()["gpu_count"] == 1 and unchanged.json()["gpu_model_id"] == gpu["id"]


async def test_gpu_model_used_by_a_spec_cannot_be_deleted(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    gpu = await _gpu(api, admin_headers)
    await _spec(api, admin_headers, "a100x1", gpu_model_id=gpu["id"], gpu_count=1)
    await _spec(api, admin_headers, "a100x8", gpu_model_id=gpu["id"], gpu_count=8)
    refused = await api.delete(f"{CATALOG}/gpu-models/{gpu['id']}", headers=admin_headers)
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    assert "'A100-80G'" in message and "spec 'a100x1'" in message and "spec 'a100x8'" in message
    assert (await api.get(f"{CATALOG}/gpu-models/{gpu['id']}", headers=admin_headers)).status_code == 200

    for name in ("a100x1", "a100x8"):
        assert (await api.delete(f"{CATALOG}/specs/{name}", headers=admin_headers)).status_code == 204
    assert (await api.delete(f"{CATALOG}/gpu-models/{gpu['id']}", headers=admin_headers)).status_code == 204


async def test_database_itself_refuses_deleting_a_referenced_gpu_model(
    api: httpx.AsyncClient, admin_headers: Headers, engine: Engine
) -> None:
    """The foreign key, not only the API check, protects specs (another writer, or a race)."""
    gpu = await _gpu(api, admin_headers)
    await _spec(api, admin_headers, "a100x1", gpu_model_id=gpu["id"], gpu_count=1)
    with Session(engine) as session, pytest.raises(IntegrityError):
        session.execute(delete(GpuModel).where(GpuModel.id == gpu["id"]))
        session.commit()


# --- purposes -----------------------------------------------------------------------------------------


async def test_purpose_round_trip(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    created = await _create(api, admin_headers, "purposes", name="教學", description="Teaching")
    assert created["name"] == "教學" and created["description"] == "Teaching"
    read = await api.get(f"{CATALOG}/purposes/教學", headers=admin_headers)
    assert read.json() == created
    patched = await api.patch(
        f"{CATALOG}/purposes/{created['id']}", headers=admin_headers, json={"description": "Courses"}
    )
    assert patched.json()["description"] == "Courses" and patched.json()["name"] == "教學"
    _assert_error(
        await api.patch(f"{CATALOG}/purposes/{created['id']}", headers=admin_headers, json={"name": None}),
        422,
        "name",
    )
    assert (await api.delete(f"{CATALOG}/purposes/{created['id']}", headers=admin_headers)).status_code == 204
    _assert_error(await api.delete(f"{CATALOG}/purposes/{created['id']}", headers=admin_headers), 404, None)


# --- who may do what ----------------------------------------------------------------------------------


async def test_members_read_but_cannot_write(
    api: httpx.AsyncClient, admin_headers: Headers, user_headers: Headers
) -> None:
    gpu = await _gpu(api, admin_headers)
    spec = await _spec(api, admin_headers, "cpu")
    purpose = await _create(api, admin_headers, "purposes", name="競賽")
    items = {"gpu-models": gpu, "specs": spec, "purposes": purpose}
    bodies = {
        "gpu-models": {"name": "new", "vendor": "AMD", "memory_gb": 64},
        "specs": {"name": "new", "vcpu": 1, "ram_gb": 1, "hourly_price": "1"},
        "purposes": {"name": "new"},
    }
    for resource, item in items.items():
        listed = await api.get(f"{CATALOG}/{resource}", headers=user_headers)
        assert listed.status_code == 200 and listed.json()["total"] == 1
        assert (await api.get(f"{CATALOG}/{resource}/{item['id']}", headers=user_headers)).json() == item

        created = await api.post(f"{CATALOG}/{resource}", headers=user_headers, json=bodies[resource])
        patched = await api.patch(
            f"{CATALOG}/{resource}/{item['id']}", headers=user_headers, json={"name": "x"}
        )
        deleted = await api.delete(f"{CATALOG}/{resource}/{item['id']}", headers=user_headers)
        assert created.status_code == patched.status_code == deleted.status_code == 403
        assert (await api.get(f"{CATALOG}/{resource}/{item['id']}", headers=user_headers)).json() == item

        assert (await api.get(f"{CATALOG}/{resource}")).status_code == 401
        assert (await api.post(f"{CATALOG}/{resource}", json=bodies[resource])).status_code == 401
        assert (await api.delete(f"{CATALOG}/{resource}/{item['id']}")).status_code == 401


# --- lists --------------------------------------------------------------------------------------------


async def test_lists_page_and_filter(api: httpx.AsyncClient, admin_headers: Headers) -> None:
    a100 = await _gpu(api, admin_headers)
    mi210 = await _create(api, admin_headers, "gpu-models", name="MI210-64G", vendor="AMD", memory_gb=64)
    await _spec(api, admin_headers, "cpu-small")
    await _spec(api, admin_headers, "a100x1", gpu_model_id=a100["id"], gpu_count=1)
    await _spec(api, admin_headers, "A100x4", gpu_model_id=a100["id"], gpu_count=4, is_active=False)
    await _spec(api, admin_headers, "mi210x2", gpu_model_id=mi210["id"], gpu_count=2)

    async def names(resource: str, **params: Any) -> tuple[list[str], int]:
        response = await api.get(f"{CATALOG}/{resource}", headers=admin_headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [item["name"] for item in body["items"]], body["total"]

    assert await names("specs") == (["A100x4", "a100x1", "cpu-small", "mi210x2"], 4)
    assert await names("specs", limit=2, offset=1) == (["a100x1", "cpu-small"], 4)
    assert await names("specs", offset=10) == ([], 4)
    assert await names("specs", name="a100") == (["A100x4", "a100x1"], 2)
    assert await names("specs", gpu_model_id=mi210["id"]) == (["mi210x2"], 1)
    assert await names("specs", min_gpu_count=2) == (["A100x4", "mi210x2"], 2)
    assert await names("specs", is_active=True) == (["a100x1", "cpu-small", "mi210x2"], 3)
    assert await names("specs", is_active=False, name="A1") == (["A100x4"], 1)
    # Wildcards in the filter are taken literally.
    assert await names("specs", name="%") == ([], 0)
    assert await names("gpu-models", name="mi") == (["MI210-64G"], 1)
    assert await names("gpu-models", limit=1) == (["A100-80G"], 2)

    listed = await api.get(f"{CATALOG}/specs", headers=admin_headers, params={"name": "mi210"})
    assert listed.json()["items"][0]["gpu_model_name"] == "MI210-64G"
    assert listed.json()["limit"] == 50 and listed.json()["offset"] == 0
    _assert_error(await api.get(f"{CATALOG}/specs", headers=admin_headers, params={"limit": 0}), 422, "limit")
    _assert_error(
        await api.get(f"{CATALOG}/specs", headers=admin_headers, params={"min_gpu_count": -1}),
        422,
        "min_gpu_count",
    )


# --- starter catalog ----------------------------------------------------------------------------------


def _catalog_rows(engine: Engine) -> tuple[list[str], list[str], list[str]]:
    with Session(engine) as session:
        return (
            sorted(session.exec(select(GpuModel.name)).all()),
            sorted(session.exec(select(Spec.name)).all()),
            sorted(session.exec(select(Purpose.name)).all()),
        )


def test_seed_fills_an_empty_catalog_once(engine: Engine) -> None:
    assert seed_default_catalog(engine) is True
    first = _catalog_rows(engine)
    gpus, specs, purposes = first
    assert len(gpus) >= 2 and len(specs) >= 3
    assert {"研究", "教學", "競賽"} <= set(purposes)
    with Session(engine) as session:
        all_specs = session.exec(select(Spec)).all()
        assert any(s.gpu_model_id is None and s.gpu_count == 0 for s in all_specs)
        assert any(s.gpu_count > 0 for s in all_specs)
        assert all(s.is_active and s.currency == "TWD" and s.hourly_price >= 0 for s in all_specs)

    assert seed_default_catalog(engine) is False
    assert _catalog_rows(engine) == first


@pytest.mark.parametrize("resource", ["gpu-models", "specs", "purposes"])
async def test_seed_leaves_a_catalog_with_rows_alone(
    api: httpx.AsyncClient, admin_headers: Headers, engine: Engine, resource: str
) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "gpu-models": {"name": "H100-80G", "vendor": "NVIDIA", "memory_gb": 80},
        "specs": {"name": "mine", "vcpu": 1, "ram_gb": 1, "hourly_price": "1"},
        "purposes": {"name": "mine"},
    }
    await _create(api, admin_headers, resource, **bodies[resource])
    before = _catalog_rows(engine)
    assert seed_default_catalog(engine) is False
    assert _catalog_rows(engine) == before


async def test_seeded_catalog_is_served(
    api: httpx.AsyncClient, user_headers: Headers, engine: Engine
) -> None:
    seed_default_catalog(engine)
    specs = (await api.get(f"{CATALOG}/specs", headers=user_headers, params={"min_gpu_count": 1})).json()
    assert specs["total"] >= 2
    assert all(item["gpu_model_name"] for item in specs["items"])
