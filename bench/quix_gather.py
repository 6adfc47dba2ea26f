"""The Quix Streams peer of the gather benchmark, written as a Quix Streams user would: count the
per-CCD outcomes of each visit (records are keyed by visit) and emit one summary when the count
reaches the expected number of detectors. Exactly-once, like Prompt Streams' gather.

Runs in its own virtualenv (`make bench` installs the `bench` extra of pyproject.toml into
.local/venv-quix: quixstreams pins an older confluent-kafka than Prompt Streams uses), until it
is terminated.
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application, State


def main() -> int:
    """Build the dataframe and run it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in ("--bootstrap", "--input", "--output", "--group", "--state-dir"):
        parser.add_argument(option, required=True)
    parser.add_argument("--expected", type=int, required=True)
    args = parser.parse_args()
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      processing_guarantee="exactly-once", state_dir=args.state_dir, loglevel="WARNING")
    outcomes = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    summaries = app.topic(args.output, key_serializer="bytes", value_serializer="json")

    def count(_value: bytes, state: State) -> int:
        results: int = state.get("results", 0) + 1
        state.set("results", results)
        return results

    def summary(results: int) -> dict[str, Any]:
        return {"results": results}

    frame = app.dataframe(outcomes).apply(count, stateful=True)
    frame = frame.filter(lambda results: results == args.expected).apply(summary)
    frame.to_topic(summaries)
    print("quix-gather: started", flush=True)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
