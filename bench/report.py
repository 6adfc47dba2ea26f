"""The markdown report of `make bench`: one table per case, the machine, and how to read them."""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench import alerts, night
from bench.alerts import AlertRun
from bench.harness import LSSTCAM_DETECTORS, Spread
from bench.night import NightRun
from bench.overhead import Overhead
from bench.pipeline import machine
from bench.throughput import Rate
from stack.cluster import PROJECT_ROOT

MB = 1024 * 1024
TARGET_START_MS = 50.0
TARGET_SUMMARY_MS = 150.0
TARGET_CANCEL_MS = 1000.0


@dataclass
class Results:
    """Everything one run measured."""

    overheads: list[Overhead] = field(default_factory=list)
    rates: list[Rate] = field(default_factory=list)
    payload: list[str] = field(default_factory=list)
    seconds: float = 0.0
    alerts: list[AlertRun] = field(default_factory=list)
    night: NightRun | None = None


def _ms(spread: Spread) -> str:
    return " / ".join("-" if math.isnan(v) else f"{v * 1000:.1f}" for v in (spread.p50, spread.p99, spread.max))


def _mb(values: list[int] | list[float]) -> str:
    return ", ".join(f"{v / MB:.0f}" for v in values) or "-"


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def _overhead(results: Results) -> list[str]:
    if not results.overheads:
        return []
    return [
        "## 1. Framework overhead under an LSSTCam burst", "",
        f"Each visit: nextVisit, then, once all {LSSTCAM_DETECTORS} detectors have their start command, all "
        f"{2 * LSSTCAM_DETECTORS} raws (189 detectors x 2 snaps) at once; the stand-in pipeline at zero cost "
        "(a no-op), so every millisecond is the framework's. p50 / p99 / max in milliseconds; the first two "
        "visits of each run warm up and are not counted. Targets: p99 <= "
        f"{TARGET_START_MS:g} ms arrival -> start, <= {TARGET_SUMMARY_MS:g} ms last result -> summary, "
        f"<= {TARGET_CANCEL_MS:g} ms nextVisitCanceled -> summary.", "",
        "| workers | visits (lost) | CCDs | raw produced -> pipeline start [ms] | same, first CCD of each visit [ms] "
        "| last result -> summary emitted [ms] | last result -> summary readable [ms] "
        "| canceled visits | nextVisitCanceled -> summary readable [ms] |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {o.workers} | {o.visits} ({o.lost}) | {o.arrival_to_start.count} | {_ms(o.arrival_to_start)} | "
          f"{_ms(o.first_to_start)} | "
          f"{_ms(o.result_to_summary)} | {_ms(o.result_to_readable)} | {o.cancel_to_readable.count} | "
          f"{_ms(o.cancel_to_readable)} |" for o in results.overheads),
        "",
        "- *raw produced -> pipeline start*: per CCD, the later snap's arrival event (stamped as the harness "
        "produces it) to the moment the pipeline process begins the run. With all raws at once, it includes "
        "the queue of CCDs ahead of it: 378 raw events pass through the detector agent of their partition's worker, "
        "and 189 runs share the pipeline processes (one per core). *First CCD of each visit*: the least of a "
        "visit's CCDs, i.e. the overhead with no queue ahead.",
        "- *last result -> summary emitted*: per visit, the end of the last CCD's pipeline to the gather's "
        "decision to emit the summary (the CCD's completion event, the detector agent, the outcome topic, "
        "the gather); *readable*: to when a `read_committed` consumer receives it, after the transaction "
        "commits.",
        "- *nextVisitCanceled -> summary readable*: visits fanned out to all 189 detectors, none of whose raws "
        "come, canceled: from the cancellation's production (its own stamp) to when that consumer receives the "
        "visit's summary, every detector `canceled`.",
        "- *lost*: measured visits whose summary did not come within a minute (a warm-up or measured visit "
        "lost this way is a bug to chase: see the workers' logs under .local/bench/run/).", "",
    ]


def _throughput(results: Results) -> list[str]:
    if not results.rates:
        return []
    base = next((r for r in results.rates if r.name == "Prompt Streams"), None)

    def ratio(rate: Rate) -> str:
        if base is None or not base.results_per_second > 0:
            return "-"
        return f"{rate.results_per_second / base.results_per_second:.2f}"

    visits = max((r.outputs for r in results.rates if r.per_output > 1), default=0)
    return [
        "## 2-3. Gather throughput, against the peers", "",
        f"{visits} visits x {LSSTCAM_DETECTORS} per-CCD outcomes (and each visit's VisitExpected) written "
        "once to the gather's input topics (16 partitions, keyed by visit), then replayed by each contender "
        "from the beginning, one process each, same broker, same topics. Rate = (outputs - 1) / (last - first "
        "output's broker append time), so start-up is not counted.", "",
        "| contender | CCD results/s | visits/s | ratio to Prompt Streams | RSS after [MB] | what it does |",
        "|---|---|---|---|---|---|",
        *(f"| {r.name} | {r.results_per_second:.0f} | {r.visits_per_second:.1f} | {ratio(r)} | "
          f"{r.rss_end / MB:.0f} | {WHAT[r.name]} |" for r in results.rates),
        "",
    ]


WHAT = {
    "Prompt Streams": "the real gather, exactly-once: decodes Avro, one result per detector, per-CCD results "
                      "and metrics out, changelog, summary",
    "Kafka Streams": "count per visit key (RocksDB, changelog), summary at 189; exactly_once_v2",
    "Quix Streams": "count per visit key (RocksDB, changelog), summary at 189; exactly-once",
    "confluent-kafka ceiling": "consume and produce each record unchanged; no state, no transactions",
}


def _memory(results: Results) -> list[str]:
    rows = [(f"overhead run, {o.workers} worker(s)", o.visits, o.rss_start, o.rss_end, o.growth_per_1000())
            for o in results.overheads]
    rows += [("gather replay, 1 worker", r.outputs, [r.rss_start], [r.rss_end],
              [(r.rss_end - r.rss_start) * 1000.0 / max(r.outputs, 1)])
             for r in results.rates if r.name == "Prompt Streams"]
    if not rows:
        return []
    return [
        "## 5. Worker memory", "",
        "RSS of each worker process (the faust worker itself, without its pipeline processes), in MB. Growth "
        "per 1000 visits is extrapolated from the measured visits (after the warm-up for the overhead runs; "
        "from start-up for the gather replay, so it includes the gather's first table rows).", "",
        "| run | visits | RSS at start | RSS after the run | growth per 1000 visits |", "|---|---|---|---|---|",
        *(f"| {name} | {n} | {_mb(start)} | {_mb(end)} | {_mb(growth)} |" for name, n, start, end, growth in rows),
        "",
    ]


def _payload(results: Results) -> list[str]:
    if not results.payload:
        return []
    return ["## 4. The real payload", "", *(line.replace("# ", "### ", 1) if line.startswith("# ") else line
                                            for line in results.payload), ""]


def _alerts(results: Results) -> list[str]:
    if not results.alerts:
        return []
    standin = next((a for a in results.alerts if a.label.startswith("stand-in")), None)
    ap = next((a for a in results.alerts if a.label.startswith("built-in AP")), None)
    runs = []
    if standin is not None:
        runs.append(f"*Stand-in*: {standin.visits} LSSTCam visits of one field after {alerts.WARM_UP_VISITS} "
                    f"warm-up visit, sent as in case 1 (once the {LSSTCAM_DETECTORS} start commands are out, all "
                    f"{2 * LSSTCAM_DETECTORS} raws at once), {standin.processes} pipeline processes; "
                    f"{alerts.DIA_SOURCES} synthetic DIA sources per CCD, at the same places every visit, go "
                    "through the real association, APDB and alert publisher.")
    if ap is not None:
        runs.append(f"*Built-in AP*: a simulated night of {ap.visits} visits of one field, detectors "
                    f"{', '.join(map(str, alerts.AP_DETECTORS))} at {alerts.AP_SIZE} x {alerts.AP_SIZE} pixels, "
                    f"{ap.processes} pipeline processes, the raws snap by snap as `simulate-night` sends them "
                    f"({alerts.AP_SNAP_INTERVAL_S:g} s apart, the first {alerts.AP_LEAD_S:g} s after the fan-out).")
    return [
        "## 6. Alerts", "",
        "Per CCD, from the later snap's raw arrival event (stamped as the harness produces it) to when a "
        "`read_committed` consumer of the alert topic, reading from its end, receives the CCD's last alert (its "
        "CCD read from the diaSourceId, the first field of the Avro body). One worker per run, with its own alert "
        "topic and SQLite APDB; a visit is sent once every alert of the previous one is read. "
        + " ".join(runs) + " p50 / p99 / max in milliseconds.", "",
        "| run | CCDs (lost) | alerts | last raw -> alerts readable [ms] | associateApdb [ms] | packageAlerts [ms] |",
        "|---|---|---|---|---|---|",
        *(f"| {a.label} | {a.ccds} ({a.lost}) | {a.alerts} | {_ms(a.raw_to_alerts)} | {_ms(a.associate)} | "
          f"{_ms(a.package)} |" for a in results.alerts),
        "",
        "- *last raw -> alerts readable* includes the wait for a pipeline process behind the visit's other CCDs "
        "(their preloads, which read the APDB, and their runs). Of it, " + "; ".join(
            f"{a.label.split(',')[0]}: last raw -> pipeline start {_ms(a.raw_to_start)} ms, pipeline end -> "
            f"alerts readable {_ms(a.end_to_readable)} ms, preload finished before the last raw on {a.preloaded} "
            f"of {a.raw_to_alerts.count} CCDs" for a in results.alerts) + ". *Pipeline end -> alerts readable* "
        "is the framework's part: the outcome, the alert publisher reading `alerts.avro`, its transaction.",
        "- *associateApdb* and *packageAlerts*: the pipeline's own steps, from each per-CCD result's "
        "`associateApdbTime` and `packageAlertsTime` (every result of the measured visits). associateApdb: "
        "association against the preloaded history, forced photometry at every DIA object, the catalogues stored "
        "once in the APDB; packageAlerts: one packet per DIA source, with its history and three cutouts, written "
        "to `alerts.avro`. Both are inside the pipeline's run, so inside the latency.",
        f"- *alerts*: read of the measured visits, one per DIA source; *lost*: CCDs without a successful result, "
        f"or with alerts missing {alerts.VISIT_TIMEOUT_S:.0f} s after the last raw (see the worker's log under "
        ".local/bench/run/alerts-*/logs/).", "",
    ]


def render(results: Results, args: argparse.Namespace) -> str:
    """The whole report."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Prompt Streams benchmark", "",
        f"`make bench` at commit {_commit()}, {when}, in {results.seconds / 60:.1f} minutes. Machine: {machine()}, "
        f"{platform.system()} {platform.release()}; one local Kafka 4.1 broker (KRaft) and the registry on the "
        f"same machine. Arguments: {vars(args)}.", "",
        *_overhead(results), *_throughput(results), *_payload(results), *_memory(results), *_alerts(results),
        *(night.section(results.night) if results.night else []),
    ]
    return "\n".join(lines)


README = PROJECT_ROOT / "README.md"
QUOTE_START, QUOTE_END = "<!-- bench:start -->", "<!-- bench:end -->"


def quote_in_readme(report: str) -> None:
    """Put the report's tables (without its prose) between the README's markers: it quotes the latest run."""
    text = README.read_text()
    if QUOTE_START not in text or QUOTE_END not in text:
        return
    quoted: list[str] = []
    for line in report.splitlines():
        if line.startswith("## "):
            quoted += ["", f"#### {line[3:]}", ""]
        elif line.startswith(("|", "`make bench` at")):
            quoted.append(line)
    head, rest = text.split(QUOTE_START, 1)
    tail = rest.split(QUOTE_END, 1)[1]
    README.write_text(f"{head}{QUOTE_START}\n" + "\n".join(quoted).strip() + f"\n{QUOTE_END}{tail}")
