"""URIs from events cannot leave the data root."""

from __future__ import annotations

import pytest

from streams.core.arrivals import check_uri
from streams.errors import InvalidEventError

ROOT = "/data/repo"


@pytest.mark.parametrize("uri", ["file:///data/repo/raw/1.fits", "file://localhost/data/repo/a%20b.fits",
                                 "s3://rubin-summit/LSSTCam/20250501/x.fits"])
def test_good_uris_pass(uri: str) -> None:
    """Files under the root and well-formed S3 objects are accepted."""
    check_uri(uri, ROOT)


@pytest.mark.parametrize(("uri", "why"), [
    ("file:///etc/passwd", "outside the data root"),
    ("file:///data/repo/../../etc/passwd", "normalised"),
    ("file:///data/repo/%2e%2e/x", "normalised"),
    ("file:///data/repository/x", "outside the data root"),
    ("file://otherhost/data/repo/x", "names a host"),
    ("file:///data/repo/x\x00.fits", "normalised"),
    ("http://example.org/x", "unsupported URI scheme"),
    ("s3://Bad_Bucket/x", "malformed s3"),
    ("s3://bucket", "malformed s3"),
    ("file:///data/repo/" + "x" * 5000, "longer than"),
])
def test_escapes_are_refused(uri: str, why: str) -> None:
    """Traversal, other roots, hosts, schemes and absurd lengths are refused with a reason."""
    with pytest.raises(InvalidEventError, match=why):
        check_uri(uri, ROOT)
