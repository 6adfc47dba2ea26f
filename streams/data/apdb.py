"""The Alert Production Database, through Rubin's own `lsst-dax-apdb` (SQLite by default, Cassandra at scale).

Two calls per detector, as in Rubin's AP: the preload reads the DIA objects of the detector's padded
region with their DIA sources and forced sources (`loadDiaCatalogs`); after association the run stores
the detector's catalogues. Rubin cannot retry once it has written (DMTN-260); here a detector may be
processed again after a crash or a re-dispatch, so `store_once` stores only if the APDB holds nothing
of this visit and detector yet, and otherwise returns what is stored. With the deterministic ids of
`streams.science.association`, a store interrupted half-way and done again writes the same rows (an
SQL store is one transaction; Cassandra inserts are upserts), so nothing is ever stored twice.

An APDB that does not answer is retried until `apdb_retry_seconds`; then the CCD fails, retriable.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import astropy.time
import cassandra
import cassandra.cluster
import pandas as pd
import sqlalchemy.exc
from lsst.dax.apdb import Apdb
from lsst.dax.apdb.sql import ApdbSql
from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

from streams.config import Settings
from streams.errors import RetriableError
from streams.observability import logs
from streams.science.association import History

log = logs.events(__name__)
T = TypeVar("T")
TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, cassandra.DriverException,
             cassandra.RequestExecutionException, cassandra.cluster.NoHostAvailable, OSError, TimeoutError)
"""What an APDB that is down, restarting or overloaded raises: worth another try."""
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Sky:
    """A detector's padded region on the sky: a circle."""

    ra: float
    dec: float
    radius: float
    """[deg]"""

    def region(self) -> Circle:
        """The region as dax_apdb takes it."""
        return Circle(UnitVector3d(LonLat.fromDegrees(self.ra, self.dec)), Angle.fromDegrees(self.radius))


@dataclass(frozen=True)
class Stored:
    """A detector's catalogues as the APDB holds them after `store_once`."""

    sources: pd.DataFrame
    forced: pd.DataFrame
    already: bool
    """They were there before (an earlier attempt stored them): nothing was written."""


def _empty(frame: pd.DataFrame | None, *columns: str) -> pd.DataFrame:
    """The frame, or an empty one with integer ids (a float column would round 63-bit ids once concatenated)."""
    if frame is not None:
        return frame
    return pd.DataFrame({c: pd.Series(dtype="int64" if c.endswith("Id") or c in ("visit", "detector") else "float64")
                         for c in columns})


class ApdbAccess:
    """One process's connection to the APDB, opened on first use."""

    def __init__(self, config: str, retry_seconds: float) -> None:
        self.config = config
        self.retry_seconds = retry_seconds
        self._apdb: Apdb | None = None

    def _retrying(self, what: str, call: Callable[[Apdb], T]) -> T:
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            try:
                if self._apdb is None:
                    self._apdb = Apdb.from_uri(self.config)
                return call(self._apdb)
            except TRANSIENT as error:
                if duplicate(error):  # pandas wraps it in an OSError: a conflict, not an outage
                    raise
                self._apdb = None  # reconnect: the session may be dead
                wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                if time.monotonic() + wait > deadline:
                    raise RetriableError(f"APDB {what}: no answer within {self.retry_seconds:.0f} s "
                                         f"({type(error).__name__}: {error})") from error
                log.warning("APDB call failed: trying again", call=what, error=type(error).__name__, reason=error,
                            pause_s=round(wait, 1))
                time.sleep(wait)
                attempt += 1

    def history(self, sky: Sky, visit_time: astropy.time.Time) -> History:
        """The DIA objects in the region, with their DIA sources and forced sources in the history window."""
        def read(apdb: Apdb) -> History:
            region = sky.region()
            objects = _empty(apdb.getDiaObjects(region), "diaObjectId", "ra", "dec")
            ids = [int(i) for i in objects["diaObjectId"]]
            sources = _empty(apdb.getDiaSources(region, ids, visit_time) if ids else None,
                             "diaSourceId", "diaObjectId", "visit", "detector", "ra", "dec")
            forced = _empty(apdb.getDiaForcedSources(region, ids, visit_time) if ids else None,
                            "diaForcedSourceId", "diaObjectId", "visit", "detector")
            return History(objects.reset_index(drop=True), sources.reset_index(drop=True),
                           forced.reset_index(drop=True))
        return self._retrying("preload", read)

    def store_once(self, visit: int, detector: int, sky: Sky, visit_time: astropy.time.Time,
                   objects: pd.DataFrame, sources: pd.DataFrame, forced: pd.DataFrame) -> Stored:
        """Store the detector's catalogues unless an earlier attempt did; either way, what the APDB holds."""
        region = sky.region()

        def write(apdb: Apdb) -> Stored:
            if not apdb.containsVisitDetector(visit, detector, region, visit_time):
                try:
                    apdb.store(visit_time, objects, sources, forced)
                    return Stored(sources, forced, already=False)
                except Exception as error:
                    if not duplicate(error):
                        raise
                    # Another attempt at this detector stored the same rows meanwhile: read them back.
                    log.warning("APDB: stored meanwhile by another attempt", visit=visit, detector=detector)
            ids = [int(i) for i in objects["diaObjectId"]]
            stored = _empty(apdb.getDiaSources(region, ids, visit_time) if ids else None, "visit", "detector")
            stored_forced = _empty(apdb.getDiaForcedSources(region, ids, visit_time) if ids else None,
                                   "visit", "detector")
            mine = (stored["visit"] == visit) & (stored["detector"] == detector)
            mine_forced = (stored_forced["visit"] == visit) & (stored_forced["detector"] == detector)
            return Stored(stored[mine].sort_values("diaSourceId").reset_index(drop=True),
                          stored_forced[mine_forced].reset_index(drop=True), already=True)
        return self._retrying("store", write)


def duplicate(error: BaseException) -> bool:
    """Whether a database error is a primary key conflict (pandas and SQLAlchemy wrap the driver's)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.IntegrityError, sqlite3.IntegrityError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def create_sqlite(path: Path, config: Path) -> bool:
    """Create an empty SQLite APDB at `path`, its configuration written to `config` (the embedded default), unless
    the configuration exists; return whether it was created. Workers starting together create it once: under a
    lock, and the configuration appears only once the database is complete."""
    config.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with config.with_name(config.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if config.exists():
            return False
        partial = config.with_name(config.name + ".partial")
        # drop=True: a database left by a creation that died before its configuration was written
        ApdbSql.init_database(db_url=f"sqlite:///{path.resolve()}", drop=True).save(str(partial))
        with sqlite3.connect(path) as db:  # readers no longer wait for writers: several workers share the file
            db.execute("PRAGMA journal_mode=WAL")
        os.replace(partial, config)
        return True


if __name__ == "__main__":
    target = Path(Settings.from_env().apdb_config)
    created = create_sqlite(target.with_name("apdb.db"), target)
    print(f"APDB: {target} ({'created, SQLite' if created else 'exists'})")
