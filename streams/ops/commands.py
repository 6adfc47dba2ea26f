"""Faust app commands for the chores around a night (`faust -A streams.app <command> --help`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import faust
from confluent_kafka import KafkaException
from faust.cli import argument, option

from streams.clock import tai_minus_utc, tai_now
from streams.config import Settings
from streams.core.instruments import parse_detectors
from streams.errors import DecodeError, PromptStreamsError
from streams.ops import status
from streams.ops.inspection import Inspector
from streams.ops.replay_plan import Filters
from streams.ops.replay_run import Range, Replayer, run
from streams.runtime import admin
from streams.runtime.topic_reader import TopicNotFoundError
from streams.serde.records import RawImageAvailable

if TYPE_CHECKING:
    from streams.simulate.visits import Visits


@contextmanager
def plain_errors(settings: Settings) -> Iterator[None]:
    """Say what went wrong in one line on standard error and exit with status 1, without a traceback."""
    try:
        yield
    except TopicNotFoundError as error:
        fail(f"{error} (app {settings.app_id}: has one of its workers run yet?)")
    except PromptStreamsError as error:
        fail(str(error))
    except (KafkaException, TimeoutError) as error:
        fail(f"Kafka at {settings.cluster.bootstrap}: {error}")


def fail(message: str) -> NoReturn:
    """End the command with `message` (faust's worker would log a raised error with its traceback)."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(1)


def register(app: faust.App) -> None:
    """Attach the commands to `app`."""
    settings = app.context.settings  # type: ignore[attr-defined]

    def visits_driver() -> Visits:
        """A driver whose input topics exist (created as declared, as a worker would)."""
        from streams.simulate.visits import Visits  # a developer's tool: the worker does not load it

        driver = Visits(replace(settings))
        admin.ensure_topics(settings, [driver.topics.next_visit, driver.topics.raw_image_available])
        return driver

    def inspector() -> Inspector:
        return Inspector(settings)

    @app.command(
        option("--visits", type=int, default=3, help="Visits in the night."),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--detectors", default="0-188", help="Detector ids, e.g. 0-188 or 0,94,188."),
        option("--size", type=int, default=256, help="CCD size in pixels (4000 = each sensor's full size: "
                                                        "E2V 4096 x 4004, ITL 4072 x 4000)."),
        option("--lead-time", type=float, default=5.0, help="Seconds from nextVisit to the first raw."),
        option("--snap-interval", type=float, default=2.0, help="Seconds between the two snaps' raws."),
        option("--visit-interval", type=float, default=5.0, help="Seconds between visits (real time: 32)."),
        option("--seed", type=int, default=2026, help="Random seed: the same seed writes the same night."),
        option("--survey", default="BLOCK-365", help="Survey of every visit (it selects the pipelines)."),
        option("--without-template", default="", help="Visits (from 0) left without templates, e.g. 1,3."),
        option("--fields", type=int, default=0, help="Visit i points at field i mod FIELDS, whose transients "
                                                      "vary and come back (0: a new field every visit)."),
        option("--start", default="", help="UTC start of the night, e.g. 2026-11-25T03:00:00 (default: now). "
                                            "With the seed, it fixes the night: its groups and exposures."),
    )
    async def simulate_night(self: faust.cli.AppCommand, visits: int, instrument: str, detectors: str, size: int,
                             lead_time: float, snap_interval: float, visit_interval: float, seed: int,
                             survey: str, without_template: str, fields: int, start: str) -> None:
        """Write a simulated night under the data root and replay it as events."""
        # Imported here: the science stack takes seconds to load, and only this command needs it.
        from streams.science.geometry import CcdShape
        from streams.simulate import night as simulated
        from streams.simulate.visits import Visits

        shape = None if size == 4000 else CcdShape(size, size)
        night = simulated.plan_night(visits, tuple(sorted(parse_detectors(detectors))), shape,
                                     instrument=instrument, seed=seed,
                                     without_template=tuple(parse_detectors(without_template)), fields=fields,
                                     start=datetime.fromisoformat(start).replace(tzinfo=UTC) if start else None)
        root = Path(settings.data_root)
        self.say(f"writing {visits} visits x {len(night.detectors)} detectors x 2 snaps ({size} px) under {root}")
        arrivals = simulated.write_night(root, night)
        driver = Visits(replace(settings), survey=survey)
        simulated.replay(driver, night, arrivals, lead_time=lead_time, snap_interval=snap_interval,
                         visit_interval=visit_interval)
        self.say(f"sent {visits} visits: groups {', '.join(v.group_id for v in night.visits)}")

    @app.command(
        option("--group", required=True, help="Group id of the visit: its start, UTC, e.g. 2026-11-25T03:14:15.926."),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--detectors", default="0-188", help="Detector ids, e.g. 0-188, 94 or 0,94,188."),
        option("--exposure-id", type=int, required=True, help="Exposure id of the first snap (the next count on)."),
        option("--snaps", type=int, default=2, help="Snaps per detector."),
        option("--ra", type=float, default=0.0, help="Right ascension of the boresight [deg] (as nextVisit says)."),
        option("--dec", type=float, default=0.0, help="Declination of the boresight [deg]."),
        option("--camera-angle", type=float, default=0.0, help="Camera angle [deg] (nextVisit's cameraAngle)."),
        option("--size", type=int, default=256, help="CCD size in pixels (4000 = each sensor's full size)."),
        option("--path", default="", help="Where each raw goes under the data root, {detector} and {snap} replaced, "
                                          "e.g. raw/367/{detector}-{snap}.fits (default: the camera's naming)."),
    )
    async def write_visit(self: faust.cli.AppCommand, group: str, instrument: str, detectors: str, exposure_id: int,
                          snaps: int, ra: float, dec: float, camera_angle: float, size: int, path: str) -> None:
        """Write one simulated visit under the data root (its raws, and the calibrations, reference stars and
        template its pipelines need), sending nothing: announce it with kcat or send-next-visit and send-raw."""
        from streams.science.geometry import CcdShape  # the science stack, only for this command
        from streams.simulate.single_visit import ChosenVisit, write_chosen_visit

        chosen = ChosenVisit(instrument, group, tuple(sorted(parse_detectors(detectors))),
                             tuple(range(exposure_id, exposure_id + snaps)), ra, dec, camera_angle)
        with plain_errors(settings):
            try:
                written = write_chosen_visit(Path(settings.data_root), chosen,
                                             None if size == 4000 else CcdShape(size, size), path)
            except ValueError as error:
                fail(f"{group}: {error}")
        for raw in written:
            self.say(str(raw))

    @app.command(
        argument("files", nargs=-1, required=True),
        option("--instrument", default="LSSTCam", help="Instrument whose visits may use the templates."),
        option("--filter", "filter_name", required=True, help="Physical filter, e.g. r_57."),
        option("--psf-sigma", type=float, default=None, help="PSF Gaussian sigma [pixels] when the header has no "
                                                            "PSFSIGMA."),
    )
    async def ingest_templates(self: faust.cli.AppCommand, files: tuple[str, ...], instrument: str,
                               filter_name: str, psf_sigma: float | None) -> None:
        """Add template tiles (FITS images with a celestial WCS) to the repository under the data root."""
        from streams.data.ingest import ingest_template  # the science stack, only for this command

        with plain_errors(settings):
            for file in files:
                done = ingest_template(Path(settings.data_root), instrument, filter_name, Path(file), psf_sigma)
                self.say(f"{file}: {done.what} -> {done.path}")

    @app.command(
        argument("file"),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--type", "calib_type", required=True, help="bias, dark, flat (images) or ptc (a table of the "
                                                             "amplifiers' gain [e-/ADU] and read_noise [e-])."),
        option("--detector", type=int, required=True, help="Detector id."),
        option("--filter", "filter_name", default="any", help="Physical filter (flats only)."),
        option("--valid-from", required=True, help="UTC start of validity, e.g. 2026-11-25T00:00:00."),
        option("--valid-to", required=True, help="UTC end of validity."),
    )
    async def ingest_calibration(self: faust.cli.AppCommand, file: str, instrument: str, calib_type: str,
                                 detector: int, filter_name: str, valid_from: str, valid_to: str) -> None:
        """Add a master calibration of one detector to the repository under the data root."""
        from streams.data.ingest import ingest_calibration  # the science stack, only for this command

        def tai(text: str) -> float:
            return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() + tai_minus_utc()

        with plain_errors(settings):
            done = ingest_calibration(Path(settings.data_root), instrument, calib_type, detector, Path(file),
                                      tai(valid_from), tai(valid_to), filter_name)
        self.say(f"{file}: {done.what} -> {done.path}")

    @app.command(
        argument("files", nargs=-1, required=True),
    )
    async def ingest_refcat(self: faust.cli.AppCommand, files: tuple[str, ...]) -> None:
        """Add reference stars (FITS or Parquet tables: ra, dec, <band>_mag or <band>_flux [nJy], optional proper
        motions) to the sharded reference catalogue under the data root, for astrometry and the zero point."""
        from streams.data.ingest import ingest_refcat  # the science stack, only for this command

        with plain_errors(settings):
            for file in files:
                done = ingest_refcat(Path(settings.data_root), Path(file))
                self.say(f"{file}: {done.what} -> {done.path}")

    @app.command(
        option("--group", required=True, help="Group id of the visit, e.g. 2026-11-25T03:14:15.926."),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--survey", default="BLOCK-365", help="Survey (it selects the pipelines)."),
        option("--nimages", type=int, default=2, help="Snaps per detector."),
        option("--duration", type=float, default=32.0, help="Expected duration of the visit [s]."),
        option("--filters", default="", help="Filter name, e.g. r_57."),
        option("--ra", type=float, default=0.0, help="Right ascension [deg] (ICRS)."),
        option("--dec", type=float, default=0.0, help="Declination [deg] (ICRS)."),
    )
    async def send_next_visit(self: faust.cli.AppCommand, group: str, instrument: str, survey: str, nimages: int,
                              duration: float, filters: str, ra: float, dec: float) -> None:
        """Announce a visit now, as the ScriptQueue does: a framed Avro SAL nextVisit."""
        with plain_errors(settings):
            driver = visits_driver()
        visit = driver.next_visit(group, instrument=instrument, survey=survey, nimages=nimages,
                                           duration=duration, filters=filters, position=[ra, dec])
        self.say(status.record_json(visit))

    @app.command(
        option("--group", required=True, help="Group id of the visit."),
        option("--detectors", required=True, help="Detector ids, e.g. 94, 0-8 or 0,94,188."),
        option("--exposure-id", type=int, required=True, help="Exposure id of the raws."),
        option("--uri", required=True, help="URI of the raw; {detector} is replaced by each detector id, "
                                            "e.g. file:///repo/raw/367/{detector}.fits."),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--snap", type=int, default=0, help="Snap index (0 for the first)."),
    )
    async def send_raw(self: faust.cli.AppCommand, group: str, detectors: str, exposure_id: int, uri: str,
                       instrument: str, snap: int) -> None:
        """Announce raws that landed in storage, one per detector, to their detectors' partitions."""
        now = tai_now()
        arrivals = [RawImageAvailable(instrument=instrument, group_id=group, detector=detector, snap=snap,
                                      exposure_id=exposure_id, uri=uri.replace("{detector}", str(detector)),
                                      arrival_time=now)
                    for detector in sorted(parse_detectors(detectors))]
        with plain_errors(settings):
            visits_driver().raws(arrivals)
        for arrival in arrivals:
            self.say(status.record_json(arrival))

    @app.command(
        argument("group"),
        option("--instrument", default="LSSTCam", help="Instrument."),
    )
    async def visit_status(self: faust.cli.AppCommand, group: str, instrument: str) -> None:
        """Show one visit: in flight or summarised, and each detector's state."""
        reader = inspector()
        with plain_errors(settings):
            progress = reader.visits(instrument, group)
            detectors = reader.detectors(instrument, group)
        self.say(status.visit_status(instrument, group, progress[0] if progress else None, detectors))

    @app.command()
    async def visits_in_flight(self: faust.cli.AppCommand) -> None:
        """List the visits whose summary has not gone out yet, oldest first."""
        with plain_errors(settings):
            rows = inspector().visits()
        self.say(status.in_flight_table(status.in_flight(rows), tai_now()))

    @app.command(option("--last", type=int, default=20, help="How many of the latest dead letters."))
    async def dead_letters(self: faust.cli.AppCommand, last: int) -> None:
        """Show the latest dead letters: where each came from and why it could not be used."""
        with plain_errors(settings):
            letters = inspector().dead_letters(last)
        self.say(status.dead_letter_table(letters))

    @app.command(
        argument("topic"),
        option("--last", type=int, default=None, help="Only the last N records of each partition."),
    )
    async def consume(self: faust.cli.AppCommand, topic: str, last: int | None) -> None:
        """Print a topic's committed records as JSON lines, decoded through the schema registry."""
        with plain_errors(settings):
            for message, record in inspector().records(topic, last):
                if isinstance(record, DecodeError):
                    self.say(f"{message.topic()} [{message.partition()}] @{message.offset()}: {record}",
                             file=click.get_text_stream("stderr"))
                else:
                    self.say(status.record_json(record))

    @app.command(
        option("--name", required=True, help="The replay's name: its application id (consumer groups, tables), topic "
                                             "prefix (<name>.*) and output folder (<output root>/replays/<name>)."),
        option("--since", default="", help="UTC time of the first nextVisit to replay, e.g. 2026-11-25T03:00:00."),
        option("--until", default="", help="UTC time after the last nextVisit to replay."),
        option("--from-offset", type=int, default=None, help="Offset of the first nextVisit (its topic has one "
                                                             "partition)."),
        option("--to-offset", type=int, default=None, help="Offset after the last nextVisit."),
        option("--instrument", multiple=True, help="Only this instrument's visits (repeatable)."),
        option("--group", multiple=True, help="Only this group's visit (repeatable)."),
        option("--detectors", default="", help="Only these detectors, e.g. 94 or 0-8 (default: all)."),
        option("--workers", type=int, default=1, help="Replay workers to start here for the replay (0: start them "
                                                      "yourself with the settings it prints)."),
        option("--speed", type=float, default=0.0, help="Send at this multiple of the original pace "
                                                        "(0: as fast as possible; 1: real time)."),
        option("--wait", type=float, default=None, help="Seconds to wait for the visits' summaries "
                                                        "(default: the visit deadline, image + process timeouts)."),
    )
    async def replay(self: faust.cli.AppCommand, name: str, since: str, until: str, from_offset: int | None,
                     to_offset: int | None, instrument: tuple[str, ...], group: tuple[str, ...], detectors: str,
                     workers: int, speed: float, wait: float | None) -> None:
        """Run a range of the input topics through the topology again, without touching live state."""
        filters = Filters(frozenset(instrument), frozenset(group), parse_detectors(detectors))
        chosen = Range(kafka_ms(since), kafka_ms(until), from_offset, to_offset)
        with plain_errors(settings):
            replayer = Replayer(settings, name, filters)
            report = await asyncio.to_thread(
                run, replayer, chosen, speed=speed, workers=workers,
                wait=wait if wait is not None else settings.image_timeout + settings.process_timeout + 120,
                say=self.say)
        self.say(report.text())
        if report.incomplete:
            raise SystemExit(2)


def kafka_ms(text: str) -> int | None:
    """A UTC time (ISO 8601, naive means UTC) as a Kafka timestamp [ms]; empty stays None."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return int(1000 * (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
