"""Label selectors (query strings and `matchLabels`/`matchExpressions`) and field selectors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SET_TERM = re.compile(r"^(!?)([^\s!=(),]+)\s+(in|notin)\s*\((.*)\)$")
_EQUALITY_TERM = re.compile(r"^([^\s!=(),]+)\s*(==|!=|=)\s*([^\s!=(),]*)$")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        return present if self.operator == "exists" else not present


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_terms(text: str) -> list[str]:
    """Split on the commas that are outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return [t for t in terms if t]


def _checked_key(key: str, term: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"unable to parse requirement: invalid label key {key!r} in {term!r}")
    return key


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; raises ValueError on malformed input."""
    requirements = []
    for term in _split_terms(text or ""):
        set_match = _SET_TERM.match(term)
        equality = _EQUALITY_TERM.match(term)
        if set_match and not set_match.group(1):
            values = frozenset(v.strip() for v in set_match.group(4).split(",") if v.strip())
            requirements.append(
                Requirement(_checked_key(set_match.group(2), term), set_match.group(3), values)
            )
        elif equality:
            operator = "!=" if equality.group(2) == "!=" else "="
            key = _checked_key(equality.group(1), term)
            requirements.append(Requirement(key, operator, frozenset({equality.group(3)})))
        elif term.startswith("!"):
            requirements.append(Requirement(_checked_key(term[1:].strip(), term), "!exists"))
        else:
            requirements.append(Requirement(_checked_key(term, term), "exists"))
    return LabelSelector(tuple(requirements))


_EXPRESSION_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def selector_from_spec(spec: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a workload's `spec.selector`; raises ValueError for an unknown operator."""
    spec = spec or {}
    requirements = [
        Requirement(k, "=", frozenset({str(v)})) for k, v in (spec.get("matchLabels") or {}).items()
    ]
    for expression in spec.get("matchExpressions") or []:
        operator = _EXPRESSION_OPERATORS.get(expression.get("operator", ""))
        if operator is None:
            raise ValueError(f"{expression.get('operator')!r} is not a valid label selector operator")
        values = frozenset(str(v) for v in expression.get("values") or [])
        requirements.append(Requirement(str(expression.get("key", "")), operator, values))
    return LabelSelector(tuple(requirements))


def selector_to_text(spec: Mapping[str, Any] | None) -> str:
    """The query-string form of `spec.selector`, as a Scale's `status.selector` reports it."""
    parts = [f"{k}={v}" for k, v in sorted(((spec or {}).get("matchLabels") or {}).items())]
    for expression in (spec or {}).get("matchExpressions") or []:
        operator, key = expression.get("operator"), expression.get("key")
        values = ",".join(sorted(expression.get("values") or []))
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }.get(operator, "")
        )
    return ",".join(p for p in parts if p)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (dotted path, wants equal, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in self.terms)


def parse_field_selector(text: str | None) -> FieldSelector:
    """`metadata.name=x,status.phase!=Failed`; any dotted path of the object may be used."""
    terms = []
    for term in _split_terms(text or ""):
        match = _EQUALITY_TERM.match(term)
        if not match:
            raise ValueError(f"invalid field selector: {term!r}")
        terms.append((match.group(1), match.group(2) != "!=", match.group(3)))
    return FieldSelector(tuple(terms))
