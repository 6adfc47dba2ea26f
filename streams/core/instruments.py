"""Instruments and their detectors, from configuration (`streams/instruments.toml` by default)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from streams.errors import ConfigurationError


class InstrumentConfigError(ConfigurationError):
    """The instrument configuration cannot be used."""


@dataclass(frozen=True)
class Instrument:
    """A camera Prompt Streams processes: its detector ids and which of them are switched off."""

    name: str
    detectors: frozenset[int]
    disabled: frozenset[int]

    @property
    def active(self) -> tuple[int, ...]:
        """Detectors a visit fans out to, sorted (the real system skips disabled ones too)."""
        return tuple(sorted(self.detectors - self.disabled))


def parse_detectors(spec: str | int | list[int]) -> frozenset[int]:
    """Detector ids from `"0-188"`, `"0-8, 12"`, `0` or `[1, 2]`."""
    if isinstance(spec, int):
        return frozenset([spec])
    if isinstance(spec, list):
        return frozenset(int(item) for item in spec)
    ids: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return frozenset(ids)


def parse_instruments(text: str) -> dict[str, Instrument]:
    """Instruments from TOML: a table per instrument with `detectors` and optional `disabled`.

    Raises:
        InstrumentConfigError: unreadable TOML, bad ranges, or disabled ids outside the camera.
    """
    try:
        raw: dict[str, Any] = tomllib.loads(text)
        instruments = {
            name: Instrument(name, parse_detectors(table["detectors"]),
                             parse_detectors(table.get("disabled", [])))
            for name, table in raw.items()
        }
    except (tomllib.TOMLDecodeError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise InstrumentConfigError(f"bad instrument configuration: {error!r}") from error
    for instrument in instruments.values():
        if stray := sorted(instrument.disabled - instrument.detectors):
            raise InstrumentConfigError(f"{instrument.name}: disabled detectors {stray} do not exist")
    return instruments
