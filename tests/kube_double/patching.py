"""The four PATCH flavours: JSON merge patch, strategic merge patch, JSON patch and server-side apply."""

from __future__ import annotations

import copy
from typing import Any

# Lists the real API merges item by item in a strategic merge patch, keyed by this field.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
}
_SET_LISTS = {"finalizers"}
# Fields server-side apply never takes ownership of: identity, bookkeeping, and what the server writes.
_UNOWNED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("status",),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
}


class PatchError(ValueError):
    """A patch that cannot be applied; the server answers 422."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return _MERGE_KEYS.get(field)


def _strategic_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    existing = current if isinstance(current, list) else []
    if field in _SET_LISTS:
        return existing + [item for item in patch if item not in existing]
    key = _merge_key(field, patch + existing)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy(patch)
    result = copy.deepcopy(existing)
    for item in patch:
        position = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(key) == item.get(key)),
            None,
        )
        directive = item.get("$patch")
        if directive == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except that lists of named things (containers, env, volumes...) merge by their key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _strategic_list(key, result.get(key), value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return doc


def _index(parent: list[Any], token: str, path: str, inserting: bool) -> int:
    if inserting and token == "-":
        return len(parent)
    if not token.isdigit() or int(token) > len(parent) - (0 if inserting else 1):
        raise PatchError(f"index {token!r} out of range in {path!r}")
    return int(token)


def _json_patch_op(doc: Any, operation: dict[str, Any]) -> Any:
    op, path = operation.get("op"), str(operation.get("path", ""))
    parts = _pointer(path)
    if op in ("move", "copy"):
        source = _pointer(str(operation.get("from", "")))
        value = copy.deepcopy(_container(doc, source, operation.get("from", "")))
        if op == "move":
            doc = _json_patch_op(doc, {"op": "remove", "path": operation["from"]})
        return _json_patch_op(doc, {"op": "add", "path": path, "value": value})
    if op == "test":
        if _container(doc, parts, path) != operation.get("value"):
            raise PatchError(f"testing value at {path!r} failed")
        return doc
    if op not in ("add", "remove", "replace"):
        raise PatchError(f"unknown JSON patch operation {op!r}")
    if op != "remove" and "value" not in operation:
        raise PatchError(f"operation {op!r} on {path!r} needs a value")
    value = copy.deepcopy(operation.get("value"))
    if not parts:
        if op == "remove":
            raise PatchError("cannot remove the whole document")
        return value
    parent, token = _container(doc, parts[:-1], path), parts[-1]
    if isinstance(parent, dict):
        if op != "add" and token not in parent:
            raise PatchError(f"path {path!r} does not exist")
        if op == "remove":
            del parent[token]
        else:
            parent[token] = value
    elif isinstance(parent, list):
        index = _index(parent, token, path, inserting=op == "add")
        if op == "add":
            parent.insert(index, value)
        elif op == "remove":
            del parent[index]
        else:
            parent[index] = value
    else:
        raise PatchError(f"path {path!r} does not point into an object or a list")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902, applied to a copy: add, remove, replace, move, copy and test."""
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        doc = _json_patch_op(doc, operation)
    return doc


def field_paths(obj: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Leaf paths of a configuration; lists are atomic, as `ownership` is tracked per field."""
    if not isinstance(obj, dict) or (not obj and prefix):
        return {prefix}
    paths: set[tuple[str, ...]] = set()
    for key, value in obj.items():
        path = (*prefix, key)
        if path not in _UNOWNED:
            paths |= field_paths(value, path)
    return paths


def fields_v1(paths: set[tuple[str, ...]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def paths_from_fields_v1(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not tree:
        return {prefix} if prefix else set()
    paths: set[tuple[str, ...]] = set()
    for key, child in tree.items():
        if key.startswith("f:"):
            paths |= paths_from_fields_v1(child, (*prefix, key[2:]))
    return paths


def _remove_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = obj
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _deep_merge(target: Any, applied: Any) -> Any:
    if not isinstance(applied, dict) or not isinstance(target, dict):
        return copy.deepcopy(applied)
    result = copy.deepcopy(target)
    for key, value in applied.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _deep_merge(result.get(key), value)
    return result


def apply_configuration(
    current: dict[str, Any], applied: dict[str, Any], previously_applied: set[tuple[str, ...]]
) -> dict[str, Any]:
    """Server-side apply: fields this manager applied before and has now dropped are removed,
    the rest of the configuration is merged in (lists replace as a whole)."""
    result = copy.deepcopy(current)
    for path in previously_applied - field_paths(applied):
        _remove_path(result, path)
    merged: dict[str, Any] = _deep_merge(result, applied)
    return merged
