"""Resource quantities ("500m", "2", "64Gi") and the resources a pod asks for."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")


def parse_quantity(value: object) -> Fraction:
    """Parse a Kubernetes quantity; raises ValueError for anything the real API would reject."""
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression, got {value!r}")
    if isinstance(value, int | float):
        return Fraction(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY.pattern}', got {value!r}")
    number = Fraction(match.group(1))
    if match.group(2):
        return number * Fraction(10) ** int(match.group(2)[1:])
    return number * _SUFFIXES[match.group(3) or ""]


def format_quantity(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{int(value * 1000)}m"


def _container_resources(container: Mapping[str, Any], which: str) -> dict[str, Fraction]:
    resources = container.get("resources") or {}
    amounts = {name: parse_quantity(v) for name, v in (resources.get(which) or {}).items()}
    if which == "requests":
        # A container that sets only a limit requests that much, as in the real API.
        for name, limit in (resources.get("limits") or {}).items():
            amounts.setdefault(name, parse_quantity(limit))
    return amounts


def pod_resources(pod: Mapping[str, Any], which: str = "requests") -> dict[str, Fraction]:
    """Summed `requests` (or `limits`) of a pod's containers; init containers count by their maximum."""
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = defaultdict(Fraction)
    for container in spec.get("containers") or []:
        for name, amount in _container_resources(container, which).items():
            total[name] += amount
    for container in spec.get("initContainers") or []:
        for name, amount in _container_resources(container, which).items():
            total[name] = max(total[name], amount)
    return dict(total)
