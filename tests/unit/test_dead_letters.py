"""Dead letters stay under the producer's limit, whatever the input and its error were."""

from __future__ import annotations

import hashlib

from streams.errors import InvalidEventError
from streams.runtime.dead_letters import dead_letter
from streams.serde.codec import parse, write_datum
from streams.serde.schemas import load_schema

PRODUCER_LIMIT = 1_000_000


def test_a_huge_input_with_a_huge_error_makes_a_dead_letter_the_broker_takes() -> None:
    """A 1 MiB value whose error quotes a 100,000-element field: the dead letter is under 1,000,000 bytes, keeps
    the value's start and says its size and hash."""
    value = b"\x00\x01" * (1 << 19)
    error = InvalidEventError(f"position {[0.0] * 100_000} is not a finite (RA, Dec) pair")
    letter = dead_letter("lsst.sal.ScriptQueue.logevent_nextVisit", 0, 42, b"k", value, error, "sal-intake", 1.0)
    encoded = write_datum(parse(load_schema("dead_letter")), letter.to_dict())
    assert len(encoded) < PRODUCER_LIMIT - 1000
    assert letter.value is not None and value.startswith(letter.value)
    assert f"of {len(value)} bytes" in letter.reason and hashlib.sha256(value).hexdigest() in letter.reason
    assert letter.reason.startswith("position [0.0, 0.0") and letter.error_class == "InvalidEventError"


def test_a_small_input_is_kept_whole() -> None:
    """An ordinary bad input keeps its bytes and its reason unchanged."""
    letter = dead_letter("t", 1, 2, None, b"\xff\xfe{", InvalidEventError("bad magic byte 0xff"), "agent", 1.0)
    assert letter.value == b"\xff\xfe{" and letter.reason == "bad magic byte 0xff" and letter.key is None
