"""The base of every generated record type: conversion from and to Avro datums."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, ClassVar, Self

_NAMES: dict[type, tuple[str, ...]] = {}
_REPLACERS: dict[type, Callable[..., Any]] = {}
_KEEP = object()


def field_names(record_type: type) -> tuple[str, ...]:
    """The record's field names, looked up once per type (dataclasses.fields is slow on hot paths)."""
    names = _NAMES.get(record_type)
    if names is None:
        names = _NAMES[record_type] = tuple(f.name for f in fields(record_type))
    return names


def _replacer(record_type: type) -> Callable[..., Any]:
    """`dataclasses.replace` for one record type, as straight-line code: it copies each field through its slot
    instead of introspecting the fields and calling `__init__` on every call (three times faster)."""
    names = field_names(record_type)
    if "__slots__" not in vars(record_type):  # not a generated record: no slots to copy through
        _REPLACERS[record_type] = replace
        return replace
    scope: dict[str, Any] = {"_new": object.__new__, "_KEEP": _KEEP, "_type": record_type}
    lines = [f"def replace(self, *, {', '.join(f'{name}=_KEEP' for name in names)}):", "    new = _new(_type)"]
    for at, name in enumerate(names):
        scope[f"_set{at}"] = getattr(record_type, name).__set__
        lines.append(f"    _set{at}(new, self.{name} if {name} is _KEEP else {name})")
    lines.append("    return new")
    exec(compile("\n".join(lines) + "\n", f"<replace {record_type.__name__}>", "exec"), scope)
    replacer: Callable[..., Any] = scope["replace"]
    _REPLACERS[record_type] = replacer
    return replacer


class Record:
    """Base of every generated record: its schema's stem, and conversion from and to dicts."""

    SCHEMA: ClassVar[str]
    NESTED: ClassVar[dict[str, tuple[str, type[Record]]]] = {}
    """Fields holding records: name -> ("one" | "array" | "map", record type)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the record from a decoded Avro datum (unknown keys are ignored)."""
        values = {name: data[name] for name in field_names(cls) if name in data}
        for name, (shape, nested) in cls.NESTED.items():
            if name in values:
                value = values[name]
                if shape == "array":
                    values[name] = [nested.from_dict(item) for item in value]
                elif shape == "map":
                    values[name] = {key: nested.from_dict(item) for key, item in value.items()}
                else:
                    values[name] = nested.from_dict(value)
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (field -> value), like `dataclasses.replace`, at a third of its cost."""
        replacer = _REPLACERS.get(type(self)) or _replacer(type(self))
        copy: Self = replacer(self, **changes)
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The record as an Avro datum."""
        data = {name: getattr(self, name) for name in field_names(type(self))}
        for name, (shape, _nested) in self.NESTED.items():
            value = data[name]
            if shape == "array":
                data[name] = [item.to_dict() for item in value]
            elif shape == "map":
                data[name] = {key: item.to_dict() for key, item in value.items()}
            else:
                data[name] = value.to_dict()
        return data
