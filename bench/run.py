"""`make bench`: every benchmark case in one run on a local stack of its own, one markdown report.

    .local/venv/bin/python -m bench.run [--visits 50] [--gather-visits 200] [--workers 1,2] [--alert-visits 5]
                                        [--night-visits 1000] [--cases overhead,gather,payload,alerts,night]
                                        [--report bench/results/bench.md]

Starts a throwaway Kafka + registry on free ports (stopped at the end), runs
1. the framework overhead under an LSSTCam burst with 1 and 2 workers (and their memory, case 5),
2.-3. the gather throughput of Prompt Streams, Kafka Streams, Quix Streams and the client ceiling,
4. the built-in Alert Production per full-size CCD (bench/pipeline.py),
6. last raw -> alerts readable per CCD, association and packaging, with the stand-in pipeline's
   synthetic DIA sources and with the built-in AP on a small simulated night (bench/alerts.py),
7. a night of LSSTCam visits through the whole topology on 2 workers: throughput, memory, correctness
   (bench/night.py),
and writes the report (bench/report.py) with the machine it ran on; the README quotes its tables.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from bench import alerts, night, overhead, pipeline, report, throughput
from stack.cluster import PROJECT_ROOT, Cluster, Ports

CASES = ("overhead", "gather", "payload", "alerts", "night")
RESULTS = Path(__file__).parent / "results" / "bench.md"


def main() -> int:
    """Parse, run every case asked for, write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=50, help="measured visits per overhead run (case 1)")
    parser.add_argument("--gather-visits", type=int, default=200, help="visits replayed through the gather")
    parser.add_argument("--workers", default="1,2", help="worker counts of the overhead runs")
    parser.add_argument("--cases", default=",".join(CASES), help=f"a subset of {', '.join(CASES)}")
    parser.add_argument("--contenders", default=",".join(throughput.CONTENDERS))
    parser.add_argument("--payload-repeat", type=int, default=1, help="pipeline runs per thread count (case 4)")
    parser.add_argument("--alert-visits", type=int, default=5, help="measured stand-in visits of the alerts (case 6)")
    parser.add_argument("--night-visits", type=int, default=1000, help="visits of the night (case 7)")
    parser.add_argument("--report", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cases = args.cases.split(",")
    root = PROJECT_ROOT / ".local" / "bench" / "run"
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    results = report.Results()
    cluster = Cluster("bench", Ports(0, 0, 0), root=root / "stack", bound_to_parent=True)
    if {"overhead", "gather", "alerts", "night"} & set(cases):
        state = cluster.up()
        try:
            if "overhead" in cases:
                results.overheads = [overhead.run(state, root, int(w), args.visits) for w in args.workers.split(",")]
            if "gather" in cases:
                results.rates = throughput.run(state, root, args.gather_visits, args.contenders.split(","))
            if "alerts" in cases:
                results.alerts = alerts.run(state, root, args.alert_visits)
            if "night" in cases:
                results.night = night.run(state, root, args.night_visits)
        finally:
            cluster.down()
    if "payload" in cases:
        results.payload = pipeline.measure(args.payload_repeat)
    results.seconds = time.monotonic() - started
    text = report.render(results, args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    if args.report == RESULTS:
        report.quote_in_readme(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
