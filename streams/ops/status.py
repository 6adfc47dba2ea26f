"""What the operators' commands show: a visit's state, the visits in flight, dead letters, records as JSON.

Pure functions of decoded records (the gather's `VisitProgress` rows, the detector table's
`DetectorProgress` rows, dead letters); `streams.ops.commands` reads them from the topics.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from streams.serde.base import Record
from streams.serde.records import DeadLetter, DetectorProgress, VisitProgress


def jsonable(value: Any) -> Any:
    """`value` with bytes as text (UTF-8, else base64 with a `base64:` prefix) and NaN as null."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value


def record_json(record: Record | dict[str, Any]) -> str:
    """One record (or an alert packet) as a line of JSON."""
    return json.dumps(jsonable(record.to_dict() if isinstance(record, Record) else record), sort_keys=False)


def detector_states(progress: VisitProgress | None, detectors: Iterable[DetectorProgress]) -> dict[int, str]:
    """Each detector's state: its result status once the gather has it, else its phase in the detector table."""
    states = {row.detector: row.phase for row in detectors}
    if progress is not None:
        states |= {detector: states.get(detector, "expected") for detector in progress.expected}
        states |= {outcome.detector: outcome.status for outcome in progress.outcomes}
    return dict(sorted(states.items()))


def visit_status(instrument: str, group: str, progress: VisitProgress | None,
                 detectors: Sequence[DetectorProgress]) -> str:
    """A visit's state for people: in flight or summarised, and each detector's state."""
    if progress is None and not detectors:
        return f"visit {instrument}/{group}: unknown (no nextVisit or raw of it has been processed)"
    states = detector_states(progress, detectors)
    if progress is None:
        head = "raws seen, no nextVisit yet"
    elif progress.summary_time:
        head = f"summarised ({len(progress.outcomes)} results)"
    else:
        head = f"in flight: {len(progress.outcomes)}/{len(progress.expected)} results"
    survey = f", survey {progress.survey}" if progress is not None and progress.survey else ""
    counts = ", ".join(f"{state} {n}" for state, n in sorted(Counter(states.values()).items()))
    lines = [f"visit {instrument}/{group}: {head}{survey}", f"  detectors: {counts}"]
    by_state: dict[str, list[int]] = {}
    for detector, state in states.items():
        by_state.setdefault(state, []).append(detector)
    lines += [f"  {state}: {' '.join(map(str, found))}" for state, found in sorted(by_state.items())]
    return "\n".join(lines)


def in_flight(rows: Iterable[VisitProgress]) -> list[VisitProgress]:
    """The visits whose summary has not gone out, oldest first."""
    return sorted((row for row in rows if not row.summary_time), key=lambda row: row.first_seen_time)


def in_flight_table(rows: Sequence[VisitProgress], now: float) -> str:
    """The visits in flight as a table: instrument, group, survey, results so far, age, time to the deadline."""
    lines = [("instrument", "group", "survey", "results", "age [s]", "deadline in [s]")]
    lines += [(row.instrument, row.group_id, row.survey, f"{len(row.outcomes)}/{len(row.expected)}",
               f"{now - row.first_seen_time:.0f}", f"{row.deadline - now:.0f}" if row.deadline else "-")
              for row in rows]
    return _table(lines) + f"\n{len(rows)} visit(s) in flight"


def dead_letter_table(letters: Sequence[tuple[int, DeadLetter]]) -> str:
    """(offset in the dead-letter topic, letter) pairs as a table, with the start of each original value."""
    lines = [("offset", "from topic [partition] @offset", "agent", "error", "reason", "value")]
    for offset, letter in letters:
        value = jsonable(letter.value) if letter.value is not None else ""
        lines.append((str(offset), f"{letter.topic} [{letter.partition}] @{letter.offset}", letter.agent,
                      letter.error_class, _clip(letter.reason, 100), _clip(value, 40)))
    return _table(lines) + f"\n{len(letters)} dead letter(s)"


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
