"""The in-memory broker keeps what exactly-once rests on, so the driver's tests mean what they say."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, TopicPartition

from streams.runtime.dead_letters import PRODUCER_LIMIT, RECORD_OVERHEAD
from streams.runtime.driver import Broker

CONFIG = {"group.id": "g", "auto.offset.reset": "earliest"}


def values(broker: Broker) -> list[bytes | None]:
    """What a read_committed consumer of partition 0 of topic `t` sees from the start."""
    consumer = broker.consumer(CONFIG)
    consumer.assign([TopicPartition("t", 0, 0)])
    return [message.value() for message in consumer.consume(100)]


def test_read_committed_stops_at_an_open_transaction_and_skips_aborted_ones() -> None:
    """Records of an aborted transaction never show; nothing past an open one shows until it ends (the last
    stable offset), even records written outside it; each transaction's end takes an offset."""
    broker = Broker()
    broker.create("t", 1)
    aborted = broker.producer({"transactional.id": "a"})
    aborted.init_transactions()
    aborted.begin_transaction()
    aborted.produce("t", value=b"aborted")
    aborted.abort_transaction()
    pending = broker.producer({"transactional.id": "b"})
    pending.init_transactions()
    pending.begin_transaction()
    pending.produce("t", value=b"pending")
    broker.append("t", 0, None, b"plain")
    assert values(broker) == []
    pending.commit_transaction()
    assert values(broker) == [b"pending", b"plain"]
    assert broker.consumer(CONFIG).get_watermark_offsets(TopicPartition("t", 0)) == (0, 5)


def test_a_new_producer_of_a_transactional_id_aborts_the_old_ones_transaction_and_fences_it() -> None:
    """After a crash, the restarted worker's producer aborts what its predecessor left open; the predecessor
    can no longer commit."""
    broker = Broker()
    broker.create("t", 1)
    old = broker.producer({"transactional.id": "w"})
    old.init_transactions()
    old.begin_transaction()
    old.produce("t", value=b"left open")
    old.send_offsets_to_transaction([TopicPartition("in", 0, 7)], "g")
    new = broker.producer({"transactional.id": "w"})
    new.init_transactions()
    with pytest.raises(KafkaException, match="fenced"):
        old.commit_transaction()
    new.begin_transaction()
    new.produce("t", value=b"after the restart")
    new.commit_transaction()
    assert values(broker) == [b"after the restart"] and broker.group_offsets == {}


def test_a_record_over_the_producers_limit_is_refused_as_librdkafka_refuses_it() -> None:
    """The engine must keep its outputs under the limit: the driver's producer refuses one over it."""
    broker = Broker()
    broker.create("t", 1)
    producer = broker.producer({"transactional.id": "w"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("t", value=bytes(PRODUCER_LIMIT - RECORD_OVERHEAD))
    with pytest.raises(KafkaException, match="too large"):
        producer.produce("t", key=b"k", value=bytes(PRODUCER_LIMIT - RECORD_OVERHEAD))
