"""Hostile FITS raws, made with astropy: a small camera raw to damage, decompression bombs, and card surgery on a
file's bytes (for values astropy would not write itself).

Used by tests/unit/test_execute.py (a bomb through the real pipeline) and tests/unit/test_fuzz_fits.py.
"""

from __future__ import annotations

import gzip
import io
from datetime import datetime

import numpy as np
from astropy.io import fits

from streams.science.geometry import CcdShape
from streams.simulate.camera import expose, make_detector, primary_header, raw_hdus

STRUCTURE = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS"}
"""Keywords astropy writes from an HDU's shape: not copied from one HDU to another."""
GZIP_MEMBER = gzip.compress(bytes(16 << 20), 9)
"""16 MiB of zeros as one gzip member (about 16 KB); gzip inflates concatenated members as one stream."""


def small_raw(detector: int = 94, *, compress: bool = True) -> fits.HDUList:
    """A simulated LSSTCam E2V raw of 64 x 128 pixels (16 segments of 8 x 16 data), RICE_1 unless not `compress`."""
    rng = np.random.default_rng(3)
    camera = make_detector(rng, "E2V", CcdShape(64, 128))
    header = primary_header("LSSTCam", detector, exposure_id=7, group_id="g", snap=0, snaps=1, image_type="SCIENCE",
                            start=datetime(2026, 11, 25, 3), exposure_time=15.0, boresight=(150.0, 2.0, 0.0),
                            filter_name="r_57")
    return raw_hdus(expose(rng, camera, np.full((64, 128), 900.0, np.float32), 15.0), camera, header, compress)


def gzip_bomb(like: fits.ImageHDU | fits.CompImageHDU, inflated: int, *, fallback_column: bool = False
              ) -> fits.BinTableHDU:
    """A tile-compressed segment with `like`'s keywords and shape, in one tile whose gzip stream inflates to
    `inflated` bytes (rounded up to 16 MiB; about 1 KB compressed per MiB), far more than the tile's pixels.

    GZIP_1, or with `fallback_column` RICE_1 whose tile is in the GZIP_COMPRESSED_DATA column (where astropy and
    cfitsio put a floating-point tile that does not quantize), its COMPRESSED_DATA left empty.
    """
    stream = [np.frombuffer(GZIP_MEMBER * -(-inflated // (16 << 20)), np.uint8)]
    empty = [np.zeros(0, np.uint8)]
    columns = {"COMPRESSED_DATA": empty, "GZIP_COMPRESSED_DATA": stream} if fallback_column \
        else {"COMPRESSED_DATA": stream}
    bomb = fits.BinTableHDU.from_columns([fits.Column(name, format="1PB()", array=np.array(cells, dtype=object))
                                          for name, cells in columns.items()])
    naxis1, naxis2 = like.header["NAXIS1"], like.header["NAXIS2"]
    compression = "RICE_1" if fallback_column else "GZIP_1"
    for key, value in {"ZIMAGE": True, "ZCMPTYPE": compression, "ZBITPIX": 32, "ZNAXIS": 2, "ZNAXIS1": naxis1,
                       "ZNAXIS2": naxis2, "ZTILE1": naxis1, "ZTILE2": naxis2}.items():
        bomb.header[key] = value
    for card in like.header.cards:
        if card.keyword not in STRUCTURE and not card.keyword.startswith(("TTYPE", "TFORM")):
            bomb.header[card.keyword] = card.value
    return bomb


def to_bytes(hdus: fits.HDUList) -> bytes:
    """The file as it would arrive."""
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def set_card(data: bytes, extname: str, keyword: str, value: int | float | str) -> bytes:
    """The file with the `keyword` card in the header of HDU `extname` (as stored: the table header of a compressed
    one, so ZNAXIS1, ZTILE1, ...) rewritten to `value`, byte for byte: no check by astropy on the way."""
    start = data.index(f"EXTNAME = '{extname}'".encode())
    header = data.rindex(b"XTENSION= ", 0, start)
    for card in range(header, len(data), 80):
        if data[card:card + 10] == f"{keyword:<8}= ".encode():
            return data[:card] + fits.Card(keyword, value).image.encode() + data[card + 80:]
        if data[card:card + 8] == b"END     ":
            break
    raise KeyError(f"no {keyword} card in the header of {extname}")
