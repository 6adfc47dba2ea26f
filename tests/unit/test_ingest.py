"""Bringing your own templates and calibrations: what the preload then finds, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from streams.data import repository
from streams.data.ingest import IngestError, ingest_calibration, ingest_template
from streams.science import amplifiers
from streams.science.geometry import tan_wcs


def template_file(folder: Path, *, wcs: bool = True, psf: bool = True) -> Path:
    """A 300 x 300 template around (150, 2), as a user would bring it."""
    header = tan_wcs(150.0, 2.0, 30.0, (150.5, 150.5)).to_header() if wcs else fits.Header()
    if psf:
        header["PSFSIGMA"] = 1.7
    path = folder / "deep_r.fits"
    image = np.random.default_rng(5).normal(0, 3, (300, 300)).astype(np.float32)
    fits.PrimaryHDU(image, header=header).writeto(path)
    return path


def test_an_ingested_template_is_found_for_a_detector_over_it(tmp_path: Path) -> None:
    """The tile lands in the repository, is found for a footprint it covers, with its WCS, PSF and a variance
    estimated from the image when it brings none."""
    done = ingest_template(tmp_path / "repo", "LSSTCam", "r_57", template_file(tmp_path))
    found = repository.find_templates(tmp_path / "repo", "LSSTCam", "r_57", np.array([149.99, 150.01]),
                                      np.array([1.99, 2.01]))
    assert found == [done.path]
    tile = repository.read_template(done.path)
    assert tile.psf_sigma == pytest.approx(1.7)
    assert np.asarray(tile.wcs.pixel_to_world_values(149.5, 149.5)) == pytest.approx([150.0, 2.0], abs=1e-6)
    assert float(np.median(tile.variance)) == pytest.approx(9.0, rel=0.1)


def test_templates_without_a_wcs_or_a_psf_or_with_a_bad_name_are_refused(tmp_path: Path) -> None:
    """Each refusal names what is missing or wrong, and nothing is written."""
    repo = tmp_path / "repo"
    with pytest.raises(IngestError, match="celestial WCS"):
        ingest_template(repo, "LSSTCam", "r_57", template_file(tmp_path, wcs=False))
    (tmp_path / "deep_r.fits").unlink()
    with pytest.raises(IngestError, match="PSFSIGMA"):
        ingest_template(repo, "LSSTCam", "r_57", template_file(tmp_path, psf=False))
    with pytest.raises(IngestError, match="filter"):
        ingest_template(repo, "LSSTCam", "../../etc", tmp_path / "deep_r.fits", psf_sigma=1.5)
    with pytest.raises(IngestError, match="not a FITS file"):
        ingest_template(repo, "LSSTCam", "r_57", Path(__file__), psf_sigma=1.5)
    assert not repo.exists()


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_images_too_large_or_compressed_without_bound_are_refused_before_decoding(tmp_path: Path) -> None:
    """A header declaring 10000 x 10000 pixels (with none behind it) and a GZIP-compressed tile HDU (whose output
    no header bounds) are refused from their headers, naming the size or the compression."""
    header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 2, "NAXIS1": 10_000, "NAXIS2": 10_000})
    declared = tmp_path / "declared.fits"
    declared.write_bytes(header.tostring().encode() + bytes(2880))
    with pytest.raises(IngestError, match="10000 x 10000 pixels, more than"):
        ingest_calibration(tmp_path / "repo", "LSSTCam", "bias", 94, declared, valid_start=0.0, valid_end=1.0)
    gzipped = tmp_path / "gzipped.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((64, 64), np.float32), compression_type="GZIP_1")]
                 ).writeto(gzipped)
    with pytest.raises(IngestError, match="GZIP_1 tile compression"):
        ingest_template(tmp_path / "repo", "LSSTCam", "r_57", gzipped, psf_sigma=1.5)
    assert not (tmp_path / "repo").exists()


def test_a_template_variance_is_checked_like_its_image(tmp_path: Path) -> None:
    """A sound template image whose VARIANCE extension is GZIP-compressed, or no image, is refused before that
    extension is decoded."""
    image = fits.open(template_file(tmp_path))[0]
    gzipped, table = tmp_path / "gzipped-variance.fits", tmp_path / "table-variance.fits"
    fits.HDUList([image, fits.CompImageHDU(np.ones((300, 300), np.float32), name="VARIANCE",
                                           compression_type="GZIP_1")]).writeto(gzipped)
    fits.HDUList([image, fits.BinTableHDU.from_columns([fits.Column("v", "E", array=np.ones(3))], name="VARIANCE")]
                 ).writeto(table)
    with pytest.raises(IngestError, match="GZIP_1 tile compression"):
        ingest_template(tmp_path / "repo", "LSSTCam", "r_57", gzipped, psf_sigma=1.5)
    with pytest.raises(IngestError, match="VARIANCE extension is no two-dimensional image"):
        ingest_template(tmp_path / "repo", "LSSTCam", "r_57", table, psf_sigma=1.5)
    assert not (tmp_path / "repo").exists()


def test_an_ingested_calibration_is_used_within_its_validity(tmp_path: Path) -> None:
    """A master bias of detector 94 valid for a day is what the preload finds in that day, and only then."""
    path = tmp_path / "bias.fits"
    fits.PrimaryHDU(np.full((64, 64), 12.0, dtype=np.float32)).writeto(path)
    start = 1.796e9
    done = ingest_calibration(tmp_path / "repo", "LSSTCam", "bias", 94, path, start, start + 86400)
    found = repository.find_calibration(tmp_path / "repo", "LSSTCam", "bias", 94, "r_57", start + 3600)
    assert found.path == done.path and float(repository.read_calibration(found.path).mean()) == 12.0
    with pytest.raises(repository.MissingCalibration):
        repository.find_calibration(tmp_path / "repo", "LSSTCam", "bias", 94, "r_57", start + 2 * 86400)
    with pytest.raises(IngestError, match="flat needs its filter"):
        ingest_calibration(tmp_path / "repo", "LSSTCam", "flat", 94, path, start, start + 86400)
    with pytest.raises(IngestError, match="empty"):
        ingest_calibration(tmp_path / "repo", "LSSTCam", "dark", 94, path, start, start)


def test_a_ptc_table_becomes_the_detectors_gains_and_read_noise(tmp_path: Path) -> None:
    """A table of the 16 amplifiers' gains and read noise is ingested as the detector's ptc, which the
    preload finds; a table lacking an amplifier is refused, naming it, and writes nothing."""
    names = list(amplifiers.SEGMENTS)
    table = Table({"amplifier": names, "gain": [1.5] * 16, "read_noise": [5.2] * 16})
    table.write(tmp_path / "ptc.fits")
    root = tmp_path / "repo"
    done = ingest_calibration(root, "LSSTCam", "ptc", 94, tmp_path / "ptc.fits", 1000.0, 2000.0)
    found = repository.find_calibration(root, "LSSTCam", "ptc", 94, "r_57", 1500.0)
    assert found.path == done.path
    assert repository.read_ptc(found.path).gains["Segment07"] == 1.5
    table[:15].write(tmp_path / "short.fits")
    with pytest.raises(IngestError, match="no row for Segment00"):
        ingest_calibration(tmp_path / "other", "LSSTCam", "ptc", 94, tmp_path / "short.fits", 1000.0, 2000.0)
    assert not (tmp_path / "other").exists()
