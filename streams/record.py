"""The base of every generated record type: conversion from and to Avro datums."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Self

_NAMES: dict[type, tuple[str, ...]] = {}


def _names(record_type: type) -> tuple[str, ...]:
    """The record's field names, looked up once per type (dataclasses.fields is slow on hot paths)."""
    names = _NAMES.get(record_type)
    if names is None:
        names = _NAMES[record_type] = tuple(f.name for f in fields(record_type))
    return names


class Record:
    """Base of every generated record: its schema's stem, and conversion from and to dicts."""

    SCHEMA: ClassVar[str]
    NESTED: ClassVar[dict[str, tuple[str, type[Record]]]] = {}
    """Fields holding records: name -> ("one" | "array" | "map", record type)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the record from a decoded Avro datum (unknown keys are ignored)."""
        values = {name: data[name] for name in _names(cls) if name in data}
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

    def to_dict(self) -> dict[str, Any]:
        """The record as an Avro datum."""
        data = {name: getattr(self, name) for name in _names(type(self))}
        for name, (shape, _nested) in self.NESTED.items():
            value = data[name]
            if shape == "array":
                data[name] = [item.to_dict() for item in value]
            elif shape == "map":
                data[name] = {key: item.to_dict() for key, item in value.items()}
            else:
                data[name] = value.to_dict()
        return data
