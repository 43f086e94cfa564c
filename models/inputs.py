"""What every request body, query and path value is checked against before it reaches a runtime, a file,
a shell, a header, a Kubernetes object, a mail or the database.

Request bodies derive from `RequestModel`: every string in them (also inside lists and dicts) refuses
control characters and lone surrogates, every float refuses infinity and NaN, and every datetime stays in
years a timer and the database can hold. Tab and newline are allowed only in fields marked `Multiline`
(commands, descriptions, reasons). The paging bounds and the OCI image reference grammar live here
too, so every model shares them.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Control characters (Unicode category Cc) and lone surrogates (Cs, which no encoder can write) never
# belong in input; tab and newline do in a command line or a description.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
_MULTILINE_ALLOWED = frozenset("\t\n")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # far enough for any project, near enough for date arithmetic
MAX_OFFSET = 1_000_000_000
MAX_LIMIT = 500


class _Multiline:
    """Marks a field whose strings may hold tab and newline."""

    def __repr__(self) -> str:
        return "Multiline"


Multiline = _Multiline()


def refused_character(text: str, multiline: bool = False) -> str | None:
    """A description of the first character `text` may not hold, or None when it is clean."""
    for position, char in enumerate(text):
        if multiline and char in _MULTILINE_ALLOWED:
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"U+{ord(char):04X} at position {position}"
    return None


def check_text(text: str, multiline: bool = False) -> str:
    found = refused_character(text, multiline)
    if found is not None:
        allowed = " (tab and newline are allowed)" if multiline else ""
        raise ValueError(f"must not contain control characters{allowed}; found {found}")
    return text


def _check_value(value: Any, multiline: bool) -> None:
    """Strings anywhere in a value: dict keys and values, list items, nested models."""
    if isinstance(value, str):
        check_text(value, multiline)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(key, False)
            _check_value(item, multiline)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_value(item, multiline)
    elif isinstance(value, datetime) and not EARLIEST <= _aware(value) < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y} and {LATEST:%Y}")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RequestModel(BaseModel):
    """The base of every request body: hostile input is refused with the field named."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        multiline = field is not None and any(item is Multiline for item in field.metadata)
        _check_value(value, multiline)
        return value


# ---- OCI image references ------------------------------------------------------------------------
# The grammar of github.com/distribution/reference: [domain[:port]/]path[:tag][@digest], with lowercase
# path components separated by '.', '_', '__' or dashes, a tag of word characters, '.' and '-' (up to
# 128), and an algorithm:hex digest. The name is at most 255 characters.

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
# The same grammar for the OpenAPI schema, whose regular expressions have no named groups.
IMAGE_REFERENCE_PATTERN = rf"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
IMAGE_NAME_MAX = 255


def check_image_reference(reference: str) -> str:
    check_text(reference)
    match = IMAGE_REFERENCE.match(reference)
    if match is None:
        raise ValueError(
            "is not an image reference such as registry.example.org/team/pytorch:2.3 "
            "(lowercase path, optional :tag and @sha256:digest)"
        )
    name = match.group("name")
    if len(name) > IMAGE_NAME_MAX:
        raise ValueError(f"the repository name is longer than {IMAGE_NAME_MAX} characters")
    # As Docker reads a name: its first part is a registry only if it has a '.' or ':' or is localhost;
    # otherwise it is part of the repository path, which is lowercase.
    first, _, rest = name.partition("/")
    if rest and not ("." in first or ":" in first or first == "localhost") and first != first.lower():
        raise ValueError("the repository name must be lowercase")
    return reference


ImageReference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        examples=["python:3.11-slim", "nvcr.io/nvidia/pytorch:24.05-py3"],
        json_schema_extra={"pattern": IMAGE_REFERENCE_PATTERN},  # checked by check_image_reference
    ),
    AfterValidator(check_image_reference),
]


def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name; a ValueError saying so otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone such as Asia/Taipei or UTC") from exc


def check_time_zone(name: str) -> str:
    """For fields holding a time zone's name: the name, once it names one."""
    zone(name)
    return name
