"""Records stored as Redis hashes, field for field: one serialisation for jobs and books alike.

A record is a dataclass whose fields are the hash's fields. :meth:`HashRecord.to_hash` and
:meth:`HashRecord.from_hash` read the field list and types from the dataclass, so a new field
needs no change to any store; hash fields that are not dataclass fields land in ``extra``.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

R = TypeVar("R", bound="HashRecord")

_KINDS: dict[type, dict[str, tuple[type, bool]]] = {}


def _field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """Each field's value type and whether it may be None, read from the annotations (cached per class)."""
    if cls not in _KINDS:
        kinds = {}
        for name, hint in typing.get_type_hints(cls).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(args) < len(typing.get_args(hint))
            kinds[name] = (args[0] if optional else hint, optional)
        _KINDS[cls] = kinds
    return _KINDS[cls]


def _decode(kind: type, text: str) -> Any:
    """One hash value as the field's type."""
    if kind is bool:
        return text == "1"
    return kind(text)


class HashRecord:
    """Mixin for a dataclass stored as one Redis hash; the subclass declares ``extra: dict[str, str]``."""

    extra: dict[str, str]

    def to_hash(self) -> dict[str, Any]:
        """The record's fields as a Redis hash (see :func:`flatten` for how values are written)."""
        kinds = _field_kinds(type(self))
        record = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            # One written form per type: speed 1 is stored as 1.0.
            record[f.name] = float(value) if kinds[f.name][0] is float and value is not None else value
        return {**self.extra, **record}

    @classmethod
    def from_hash(cls: type[R], raw: Mapping[bytes | str, bytes | str]) -> R:
        """Decode a Redis hash into a record."""
        data = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode("utf-8", "surrogatepass") if isinstance(v, bytes) else v
            )
            for k, v in raw.items()
        }
        kinds = _field_kinds(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "extra" or f.name not in data:
                continue
            kind, optional = kinds[f.name]
            text = data.pop(f.name)
            if text == "":
                # Written as None (optional fields), or a counter never set: the field's default.
                if not optional and kind is not str:
                    continue
                values[f.name] = None if optional else text
            else:
                values[f.name] = _decode(kind, text)
        return cls(**values, extra=data)


def _written(value: Any) -> str:
    """How a value is written to a hash: None as "", booleans as 1/0, floats exactly (repr)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def hash_mapping(values: Mapping[str, Any]) -> dict[str, str]:
    """The values as a mapping for ``HSET key mapping=...`` (None read back as None)."""
    return {name: _written(value) for name, value in values.items()}


def flatten(values: Mapping[str, Any]) -> list[str]:
    """The same values as flat HSET arguments (name, value, name, value, ...), for Lua scripts."""
    return [item for name, value in values.items() for item in (name, _written(value))]
