"""The operators' dashboard: a live picture of the focal plane, served by every worker at `/dashboard/`.

One self-contained HTML page (`static/dashboard.html`: inline CSS, JavaScript and SVG, nothing
fetched from outside the machine) that polls the JSON views every 2 s: each CCD of the current
visit coloured by its state, the visits in flight, the last visits' summaries and a raw-to-result
latency histogram. `?visit=<instrument>/<group>` pins a visit; clicking a row does the same.
The focal plane's geometry comes from `streams.core.focal_plane` via `/focal-plane/<instrument>/`.
The page itself holds no data, so it is open; when reads need a token, open it as
`/dashboard/#token=<token>` and it sends the token with every poll.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import faust
from faust import web

from streams.core.focal_plane import CCD_PITCH_MM, detector_centre, detector_name
from streams.core.instruments import Instrument
from streams.web.auth import Tokens
from streams.web.views import reads

CCD_SIZE_MM = 40.0
"""Drawn size of a CCD (the pitch is 42.25 mm: the gaps show)."""


def focal_plane(instrument: Instrument) -> dict[str, Any]:
    """Every detector of `instrument` with its name and centre [mm] (R22_S11 at the origin)."""
    detectors = []
    for detector in sorted(instrument.detectors):
        x, y = detector_centre(instrument.name, detector)
        detectors.append({"detector": detector, "name": detector_name(instrument.name, detector),
                          "x": x, "y": y, "disabled": detector in instrument.disabled})
    return {"instrument": instrument.name, "ccd_size": CCD_SIZE_MM, "ccd_pitch": CCD_PITCH_MM,
            "detectors": detectors}


def register(app: faust.App, instruments: dict[str, Instrument], tokens: Tokens) -> None:
    """Serve the dashboard page and the focal plane geometry it draws."""
    page = files("streams.web").joinpath("static", "dashboard.html").read_text()

    @app.page("/dashboard/")
    async def dashboard(self: web.View, request: web.Request) -> web.Response:
        """The live focal plane."""
        return self.html(page)

    @app.page("/focal-plane/{instrument}/")
    @reads(tokens)
    async def geometry(self: web.View, request: web.Request, instrument: str) -> web.Response:
        """Detector names and positions of one instrument."""
        if instrument not in instruments:
            return self.json({"error": f"unknown instrument {instrument!r}"}, status=404)
        return self.json(focal_plane(instruments[instrument]))
