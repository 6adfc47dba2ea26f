"""The ceiling of the gather benchmark: confluent-kafka consuming records and producing each one
unchanged (no decoding, no state, no transactions) until it is terminated.

    python -m bench.ceiling --input <topic> --output <topic> --group <consumer group>

Connection settings come from the PROMPT_STREAMS_* environment (streams/config.py).
"""

from __future__ import annotations

import argparse
import signal
import threading

from confluent_kafka import Consumer, Producer

from streams.config import Settings

BATCH = 1000


def main() -> int:
    """Pipe the input topic to the output topic, partition for partition."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = Settings.from_env().kafka_config()
    consumer = Consumer(config | {"group.id": args.group, "auto.offset.reset": "earliest"})
    producer = Producer(config | {"linger.ms": 5})
    consumer.subscribe([args.input])
    print("ceiling: started", flush=True)
    try:
        while not stop.is_set():
            for message in consumer.consume(BATCH, 0.1):
                if message.error() is None:
                    while True:
                        try:
                            producer.produce(args.output, key=message.key(), value=message.value(),
                                             partition=message.partition() or 0)
                            break
                        except BufferError:
                            producer.poll(0.05)
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
