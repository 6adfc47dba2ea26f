"""One simulated visit with the ids and pointing a person chooses, to send by hand (kcat, `send-raw`).

`write-visit` (`faust -A streams.app write-visit --help`) writes it: the raws of each snap and detector,
and what the built-in pipelines need to process them (master calibrations valid from a day before now,
the reference stars of the field and a template), as `streams.simulate.night` writes a night's visit.
The raws go where the camera would put them, or where a path pattern says, so that a recipe naming its
files (the README's LATISS visit: `raw/367/0-{0,1}.fits`) finds them there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from streams.clock import tai_now
from streams.data.repository import contained
from streams.science.geometry import CcdShape
from streams.simulate.night import Night, PlannedVisit, write_calibrations, write_references, write_visit


@dataclass(frozen=True)
class ChosenVisit:
    """The visit as its nextVisit and raw arrivals will say it."""

    instrument: str
    group_id: str
    """Its start, UTC, e.g. 2026-11-25T03:14:15.926 (the raws' DATE-OBS count from it)."""
    detectors: tuple[int, ...]
    exposure_ids: tuple[int, ...]
    """One per snap, in snap order."""
    ra: float = 0.0
    dec: float = 0.0
    camera_angle: float = 0.0


def write_chosen_visit(root: Path, chosen: ChosenVisit, shape: CcdShape | None, path: str = "",
                       seed: int = 2026) -> list[Path]:
    """Write the visit under `root`; the raws, snap by snap and detector by detector.

    `path` places each raw (and its JSON sidecar beside it) under `root`: `{detector}` and `{snap}` are
    replaced; empty: the camera's naming, `raw/<instrument>/<day>/<obs id>/<obs id>_<detector name>.fits`.

    Raises:
        ValueError: a group id that is not a time, or no exposure id.
        UnsafePath: a path that leaves `root`.
    """
    if not chosen.exposure_ids:
        raise ValueError("a visit needs an exposure id per snap")
    datetime.fromisoformat(chosen.group_id)  # the raws' times count from it: refuse another group id first
    visit = PlannedVisit(index=0, group_id=chosen.group_id, ra=chosen.ra, dec=chosen.dec,
                         camera_angle=chosen.camera_angle, exposure_ids=chosen.exposure_ids, field=0)
    night = Night(chosen.instrument, chosen.detectors, shape, (visit,), seed=seed, snaps=len(chosen.exposure_ids))
    write_calibrations(root, night, tai_now())
    write_references(root, night)
    written = []
    for arrivals in write_visit(root, night, visit):
        for arrival in arrivals:
            raw = Path(unquote(urlsplit(arrival.uri).path))
            if path:
                placed = path.replace("{detector}", str(arrival.detector)).replace("{snap}", str(arrival.snap))
                target = contained(root, root / placed)
                target.parent.mkdir(parents=True, exist_ok=True)
                raw.replace(target)
                raw.with_suffix(".json").replace(target.with_suffix(".json"))
                if not any(raw.parent.iterdir()):
                    raw.parent.rmdir()
                raw = target
            written.append(raw)
    return written

