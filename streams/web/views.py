"""Interactive queries over the worker's state, as JSON: visits in flight, one visit, health, readiness.

A visit's picture is spread over the workers (the detector table is partitioned by detector, the
gather's by visit, and one worker's SAL intake keeps what was fanned out), so whichever worker a
request lands on asks every worker for its slice (`/local/...`) and merges them with
`streams.core.visit_view`. Every view is read-only and shows only visit state: no settings, no
credentials. With `PROMPT_STREAMS_WEB_READ_TOKEN` set, every view but health and readiness needs it
(or a write token) as a bearer token, and a worker sends it when it asks the others.

- `GET /visits/`: visits in flight, the last finished ones, their raw-to-result histogram.
- `GET /visits/{instrument}/{group}/`: one visit, every CCD's state.
- `GET /health/`: the worker's web server and event loop answer (liveness).
- `GET /ready/`: 200 once the worker consumes (started, assigned, not recovering), else 503 and why.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import faust
from faust import web

from streams.clock import tai_now
from streams.core.visit_view import WorkerSlice, overview, visit_view
from streams.observability import logs
from streams.pipelines.runner import PipelineRunner
from streams.processors.gather import GatherProcessor
from streams.serde.records import DetectorProgress, VisitExpected, VisitProgress
from streams.web.auth import CHALLENGE, Tokens
from topology.keys import SEPARATOR, visit_key

log = logs.events(__name__)
PEER_TIMEOUT = aiohttp.ClientTimeout(total=10)
Handler = Callable[..., Awaitable[web.Response]]


@dataclass
class Sources:
    """Where a worker's state lives: its detector table, its pipeline runner, its gather and its SAL intake."""

    detectors: Callable[[str], list[DetectorProgress]]
    """This worker's detector rows whose key starts with a prefix."""
    runner: PipelineRunner
    gather: Callable[[], GatherProcessor | None]
    expected: Callable[[], list[VisitExpected]]
    decode: Callable[[bytes, type[Any]], Any]
    unassigned: Callable[[], list[str] | None]
    """The processors that have no assignment yet (None: not running yet)."""


def local_visits(sources: Sources) -> dict[str, list[dict[str, Any]]]:
    """This worker's gather rows (without per-CCD metrics: the views do not show them) and fan-outs."""
    gather = sources.gather()
    rows = gather.progress() if gather else []
    return {"progress": [_lean(row).to_dict() for row in rows],
            "expected": [expected.to_dict() for expected in sources.expected()]}


def _lean(progress: VisitProgress) -> VisitProgress:
    return replace(progress, outcomes=[replace(o, metrics={}) for o in progress.outcomes])


def local_visit(sources: Sources, instrument: str, group: str) -> dict[str, Any]:
    """This worker's slice of one visit: its detector rows, the preloads it runs, its gather row."""
    prefix = visit_key(instrument, group) + SEPARATOR
    rows = sources.detectors(prefix)
    preloading = sorted(int(key.rsplit(SEPARATOR, 1)[1]) for key in sources.runner.preloading()
                        if key.startswith(prefix))
    gather = sources.gather()
    progress = None
    if gather is not None:
        progress = gather.visit(visit_key(instrument, group))
    expected = next((e for e in sources.expected() if (e.instrument, e.group_id) == (instrument, group)), None)
    return {"rows": [row.to_dict() for row in rows], "preloading": preloading,
            "progress": _lean(progress).to_dict() if progress else None,
            "expected": expected.to_dict() if expected else None}


def peers(app: faust.App) -> set[str]:
    """The web URL of every worker of the app (from faust's router), this one's included."""
    urls = app.router.tables_metadata()  # every worker owns partitions of the detector table
    return {url.rstrip("/") for url in urls} | {str(app.conf.canonical_url).rstrip("/")}


async def ask_all(app: faust.App, path: str, here: Callable[[], Any], tokens: Tokens) -> tuple[list[Any], list[str]]:
    """Every worker's answer to `path` (this worker's from `here`, without HTTP), and what failed."""
    own = str(app.conf.canonical_url).rstrip("/")

    async def ask(url: str) -> Any:
        if url == own:
            return here()
        async with app.http_client.get(url + path, timeout=PEER_TIMEOUT, headers=tokens.read_headers()) as response:
            response.raise_for_status()
            return json.loads(await response.text())

    urls = sorted(peers(app))
    answers = await asyncio.gather(*(ask(url) for url in urls), return_exceptions=True)
    failures = [f"{url}: {answer!r}" for url, answer in zip(urls, answers, strict=True)
                if isinstance(answer, BaseException)]
    for failure in failures:
        log.warning("a worker did not answer", path=path, reason=failure)
    return [answer for answer in answers if not isinstance(answer, BaseException)], failures


def readiness(app: faust.App, unassigned: list[str] | None) -> list[str]:
    """Why the worker is not ready to serve (empty: ready); `unassigned` names the processors without an
    assignment yet (None: they are not running yet)."""
    if unassigned is None:
        return ["starting: the pipelines and the processors are not running yet"]
    return [f"the {name} processor has no assignment yet" for name in unassigned]


def reads(tokens: Tokens) -> Callable[[Handler], Handler]:
    """A view decorator: 401 and why, instead of the view, for a request without a token that may read."""
    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(self: web.View, request: web.Request, **match: str) -> web.Response:
            if why := tokens.read_refusal(request.headers):
                return self.json({"error": why}, status=401, headers=dict(CHALLENGE))
            return await handler(self, request, **match)
        return guarded
    return guard


def register(app: faust.App, sources: Sources, tokens: Tokens) -> None:
    """Attach the JSON views to `app`'s web server."""
    @app.page("/visits/")
    @reads(tokens)
    async def visits(self: web.View, request: web.Request) -> web.Response:
        """Visits in flight, the last finished ones and their latencies."""
        answers, failures = await ask_all(app, "/local/visits/", lambda: local_visits(sources), tokens)
        progresses = [VisitProgress.from_dict(row) for answer in answers for row in answer["progress"]]
        expected = [VisitExpected.from_dict(row) for answer in answers for row in answer["expected"]]
        return self.json(overview(expected, progresses) | {"unreachable": failures, "now": tai_now()})

    @app.page("/visits/{instrument}/{group}/")
    @reads(tokens)
    async def visit(self: web.View, request: web.Request, instrument: str, group: str) -> web.Response:
        """One visit: every CCD's state."""
        path = f"/local/visits/{instrument}/{group}/"
        answers, failures = await ask_all(app, path, lambda: local_visit(sources, instrument, group),
                                          tokens)
        slices = [WorkerSlice(rows=[DetectorProgress.from_dict(row) for row in answer["rows"]],
                              preloading=frozenset(answer["preloading"]),
                              progress=VisitProgress.from_dict(answer["progress"]) if answer["progress"] else None)
                  for answer in answers]
        expected = next((VisitExpected.from_dict(a["expected"]) for a in answers if a["expected"]), None)
        if expected is None and not any(s.rows or s.progress for s in slices):
            return self.json({"error": f"no visit {instrument}/{group} is known"}, status=404)
        return self.json(visit_view(instrument, group, expected, slices) | {"unreachable": failures})

    @app.page("/local/visits/")
    @reads(tokens)
    async def worker_visits(self: web.View, request: web.Request) -> web.Response:
        """This worker's gather rows (the views above ask every worker)."""
        return self.json(local_visits(sources))

    @app.page("/local/visits/{instrument}/{group}/")
    @reads(tokens)
    async def worker_visit(self: web.View, request: web.Request, instrument: str, group: str) -> web.Response:
        """This worker's slice of one visit."""
        return self.json(local_visit(sources, instrument, group))

    @app.page("/health/")
    async def health(self: web.View, request: web.Request) -> web.Response:
        """The worker answers."""
        return self.json({"status": "ok", "worker": app.conf.canonical_url.human_repr()})

    @app.page("/ready/")
    async def ready(self: web.View, request: web.Request) -> web.Response:
        """Whether the worker consumes and its gather is assigned."""
        reasons = readiness(app, sources.unassigned())
        return self.json({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)

