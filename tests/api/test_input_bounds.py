"""Every value a request can carry is bounded in the OpenAPI schema, and every body is a RequestModel (which
refuses control characters, infinities and out-of-range times), so no input can reach a 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.app import ROUTERS, create_app
from config import Settings
from models.inputs import RequestModel


def _app() -> FastAPI:
    return create_app(Settings(temporal_port=1, database_url="sqlite:///:memory:"))


def _schema() -> dict[str, Any]:
    return _app().openapi()


def unbounded(
    schema: dict[str, Any], components: dict[str, Any], where: str, seen: frozenset[str]
) -> list[str]:
    """Places in a schema where a number has no range, a string no length, a list or map no size."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return unbounded(components[name], components, where, seen | {name})
    found = []
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            found += unbounded(branch, components, where, seen)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low = "minimum" in schema or "exclusiveMinimum" in schema
        high = "maximum" in schema or "exclusiveMaximum" in schema
        if not (low and high):
            found.append(f"{where}: a number without both bounds")
    elif kind == "string" and not any(
        k in schema for k in ("maxLength", "pattern", "enum", "const", "format")
    ):
        found.append(f"{where}: a string without a maximum length")
    elif kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: a list without a maximum size")
        found += unbounded(schema.get("items", {}), components, f"{where}[]", seen)
    elif kind == "object":
        for name, field in schema.get("properties", {}).items():
            found += unbounded(field, components, f"{where}.{name}", seen)
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}: a map without a maximum size")
            found += unbounded(values, components, f"{where}{{}}", seen)
    return found


def test_every_request_value_is_bounded() -> None:
    schema = _schema()
    components = schema["components"]["schemas"]
    problems = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                name = f"{where} {parameter['in']} {parameter['name']}"
                problems += unbounded(parameter["schema"], components, name, frozenset())
            for content in operation.get("requestBody", {}).get("content", {}).values():
                problems += unbounded(content["schema"], components, f"{where} body", frozenset())
    assert problems == [], "\n".join(problems)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        nested = [m for field in annotation.model_fields.values() for m in _models_in(field.annotation)]
        return [annotation, *nested]
    return [m for argument in getattr(annotation, "__args__", ()) for m in _models_in(argument)]


def test_every_request_body_refuses_control_characters() -> None:
    bodies = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.body_field is not None:
                bodies.update(_models_in(route.body_field.field_info.annotation))
    assert bodies, "no request bodies found"
    plain = sorted(model.__name__ for model in bodies if not issubclass(model, RequestModel))
    assert plain == [], f"request models that do not derive from RequestModel: {plain}"
