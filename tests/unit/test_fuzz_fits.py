"""Fuzzing the raw reader with hostile FITS: huge, zero, negative and mistyped sizes in a segment's header,
unbounded compressions, truncated files and decompression bombs. Whatever the file, `read_raw` returns a raw or
raises a RawFormatError (its CCD fails with that reason), without hanging, and a 150 KB file never costs more
than 64 MiB: nothing is inflated beyond what the headers bound.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.science import amplifiers, isr
from tests.fits_bombs import gzip_bomb, set_card, small_raw, to_bytes
from tests.fuzzing import NASTY_INTS, NASTY_LONGS, TOO_BIG_INTS, TRIED

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
FEWER = settings(EXAMPLES, max_examples=100)
"""For the tests whose every example decodes (or builds) a raw: a narrower space, a third of a second each."""
RAWS = {"compressed": to_bytes(small_raw()), "plain": to_bytes(small_raw(compress=False))}
SIZE_KEYWORDS = {
    "compressed": ["ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZBITPIX", "ZCMPTYPE", "NAXIS1", "NAXIS2",
                   "PCOUNT", "TFIELDS", "TFORM1"],
    "plain": ["NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "PCOUNT", "GCOUNT"],
}
"""The keywords that size a segment's data, as stored (a compressed segment's are its table's)."""
HOSTILE_VALUES = st.one_of(
    st.sampled_from([*NASTY_INTS, *NASTY_LONGS, *TOO_BIG_INTS, 2**32, 99_999_999, 1 << 22, 7, 3, 2, -64, 64]),
    st.integers(), st.sampled_from([1.5, -0.0, 1e308, "abc", "", "GZIP_1", "GZIP_2", "HCOMPRESS_1", "PLIO_1",
                                    "NOCOMPRESS", "RICE_ONE", "rice_1", "1PB(99999999)", "1QB", "PJ", "--32", "+2"]))
PEAK = 64 << 20
"""Bytes reading a 150 KB raw may allocate at most, whatever its headers say."""
SEGMENT = small_raw()["Segment10"].header
SEGMENT_BYTES = SEGMENT["NAXIS1"] * SEGMENT["NAXIS2"] * 4
"""Decoded bytes of one segment of the small raw (BITPIX 32)."""


def outcome(data: bytes) -> str:
    """`read`, or the RawFormatError class read_raw refused the file with (anything else raises); counted."""
    tracemalloc.start()
    try:
        isr.read_raw(data)
        result = "read"
    except isr.RawFormatError as refused:
        result = type(refused).__name__
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK, f"reading a {len(data)} byte raw allocated {peak} bytes"
    TRIED[f"FITS raw {result}"] += 1
    return result


@EXAMPLES
@given(kind=st.sampled_from(sorted(RAWS)), segment=st.sampled_from(amplifiers.SEGMENTS), data=st.data())
def test_hostile_sizes_in_a_segment_header_are_refused_or_read(kind: str, segment: str, data: st.DataObject) -> None:
    """One to three of a segment's size keywords set to huge, zero, negative or mistyped values, byte for byte."""
    raw = RAWS[kind]
    changes = data.draw(st.lists(st.tuples(st.sampled_from(SIZE_KEYWORDS[kind]), HOSTILE_VALUES), min_size=1,
                                 max_size=3))
    for keyword, value in changes:
        raw = set_card(raw, segment, keyword, value)
    outcome(raw)


@EXAMPLES
@given(kind=st.sampled_from(sorted(RAWS)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_raw_is_refused_or_read(kind: str, cut: float) -> None:
    """The file cut anywhere: headers, tile tables, heaps or pixels missing (a cut past the last segment may
    still read)."""
    raw = RAWS[kind]
    outcome(raw[:int(cut * len(raw))])


@FEWER
@given(kind=st.sampled_from(sorted(RAWS)), segment=st.sampled_from(amplifiers.SEGMENTS),
       inflated=st.integers(1, 4 << 30), fallback_column=st.booleans())
def test_a_decompression_bomb_is_refused_before_it_inflates(kind: str, segment: str, inflated: int,
                                                            fallback_column: bool) -> None:
    """A segment replaced by one gzip tile inflating to up to 4 GiB (about 4 MB of file), as GZIP_1 or in a RICE_1
    segment's GZIP_COMPRESSED_DATA column: OversizedRawError, in bounded memory."""
    hdus = small_raw(compress=kind == "compressed")
    hdus[hdus.index_of(segment)] = gzip_bomb(hdus[segment], inflated, fallback_column=fallback_column)
    assert outcome(to_bytes(hdus)) == "OversizedRawError"


@FEWER
@given(segment=st.sampled_from(amplifiers.SEGMENTS), naxis1=st.integers(1, 1 << 20), naxis2=st.integers(1, 1 << 20),
       bitpix=st.sampled_from(sorted(isr.BITPIX_BYTES)))
def test_declared_sizes_beyond_the_limits_are_refused_from_the_header(segment: str, naxis1: int, naxis2: int,
                                                                      bitpix: int) -> None:
    """A RICE_1 segment declaring any size and pixel type: beyond a segment's pixels or tiles, or the raw's decoded
    bytes, it is an OversizedRawError before anything is decoded; within them, its tiles (absent) fail to read."""
    raw = RAWS["compressed"]
    for keyword, value in (("ZNAXIS1", naxis1), ("ZNAXIS2", naxis2), ("ZBITPIX", bitpix)):
        raw = set_card(raw, segment, keyword, value)
    result = outcome(raw)
    tiles = naxis2 * -(-naxis1 // SEGMENT["NAXIS1"])  # ZTILE1 is the original NAXIS1, ZTILE2 1
    oversized = naxis1 * naxis2 > isr.MAX_SEGMENT_PIXELS or tiles > isr.MAX_SEGMENT_TILES \
        or 15 * SEGMENT_BYTES + naxis1 * naxis2 * isr.BITPIX_BYTES[bitpix] > isr.MAX_DECODED_BYTES
    assert (result == "OversizedRawError") == oversized
