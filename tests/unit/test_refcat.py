"""The sharded reference catalogue: written, found and loaded back across shard borders and RA 0, proper motions
applied; ingested from FITS with magnitudes and from Parquet with fluxes; bad catalogues refused, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table, vstack

from streams.data import refcat
from streams.data.ingest import IngestError, ingest_refcat
from streams.science.geometry import CcdShape, detector_wcs, footprint


def star_table(ra: np.ndarray, dec: np.ndarray, **columns: np.ndarray) -> Table:
    """Stars with r fluxes that number them (star i has 1000 + i nJy), no proper motion, epoch 2016."""
    count = len(ra)
    table = Table({"ra": np.asarray(ra, dtype=float) % 360.0, "dec": np.asarray(dec, dtype=float),
                   "pm_ra": np.zeros(count), "pm_dec": np.zeros(count), "epoch": np.full(count, 2016.0),
                   "r_flux": 1000.0 + np.arange(count), "r_flux_err": np.full(count, 10.0)})
    for name, values in columns.items():
        table[name] = values
    return table


def test_shard_names_follow_a_fixed_grid_of_about_a_degree() -> None:
    """Dec bands of 1 degree cut into RA cells about 1/cos(dec) wide; RA 0 and 360 are the same cell."""
    assert refcat.shard_name(123.4, -30.5) == "d-031_r0106"  # 310 cells of 1.16 deg at dec -30.5
    assert refcat.shard_name(0.0, 2.5) == refcat.shard_name(360.0, 2.5) == "d0002_r0000"
    assert refcat.shard_name(359.99, 2.5) != refcat.shard_name(0.01, 2.5)
    assert refcat.shard_name(10.0, 90.0) == refcat.shard_name(100.0, 89.2) == "d0089_r0000"  # 3 cells up there
    assert refcat.shard_name(200.0, 89.2) == "d0089_r0001"
    assert refcat.shard_name(10.0, -90.0).startswith("d-090")


def test_stars_round_trip_across_shard_borders_and_ra_zero(tmp_path: Path) -> None:
    """A grid of stars around (0, -30) spread over several shards: a footprint straddling RA 0 and a Dec border finds
    the shards it touches and loads exactly the stars inside its corners' box."""
    ra, dec = np.meshgrid(np.linspace(-1.5, 1.5, 61), np.linspace(-31.6, -28.4, 65))
    table = star_table(ra.ravel(), dec.ravel())
    written = refcat.write(tmp_path, table)
    assert len(written) >= 12 and all(path.exists() for path in written)
    index = json.loads((tmp_path / "refcat" / "index.json").read_text())
    assert sorted(index) == sorted(path.stem for path in written)

    wcs = detector_wcs("LSSTCam", 94, 0.01, -30.0, 33.0, CcdShape())
    corner_ra, corner_dec = footprint(wcs, CcdShape())
    assert corner_ra.max() > 359 and corner_ra.min() < 1 and corner_dec.min() < -30 < corner_dec.max()
    shards = refcat.find_shards(tmp_path, corner_ra, corner_dec)
    assert {path.stem for path in shards} == {refcat.shard_name(r, d) for r in (359.9, 0.1) for d in (-30.1, -29.9)}

    stars = refcat.load(tmp_path, corner_ra, corner_dec, "r", 2016.0)
    east = (corner_ra + 180) % 360 - 180
    signed = (table["ra"] + 180) % 360 - 180
    inside = ((signed >= east.min()) & (signed <= east.max()) & (table["dec"] >= corner_dec.min())
              & (table["dec"] <= corner_dec.max()))
    assert 0 < inside.sum() < len(table)
    assert sorted(stars.flux) == sorted(table["r_flux"][inside])
    order = np.argsort(stars.flux)
    np.testing.assert_allclose(stars.ra[order], table["ra"][inside][np.argsort(table["r_flux"][inside])])
    assert np.all(np.isnan(refcat.load(tmp_path, corner_ra, corner_dec, "g", 2016.0).flux))
    assert refcat.find_shards(tmp_path / "nothing", corner_ra, corner_dec) == []
    assert len(refcat.load(tmp_path, corner_ra + 90, corner_dec, "r", 2016.0).ra) == 0


def test_a_footprint_around_the_pole_finds_the_whole_cap(tmp_path: Path) -> None:
    refcat.write(tmp_path, star_table(np.array([10.0, 130.0, 250.0, 40.0]), np.array([89.95, 89.95, 89.95, 88.0])))
    corners_ra, corners_dec = np.array([45.0, 135.0, 225.0, 315.0]), np.full(4, 89.9)
    stars = refcat.load(tmp_path, corners_ra, corners_dec, "r", 2016.0)
    assert sorted(stars.flux) == [1000.0, 1001.0, 1002.0]


def test_writing_again_merges_bands_and_does_not_double_stars(tmp_path: Path) -> None:
    """A second catalogue over the same shard brings a new band and one star already there: the shard holds the
    union of columns, the repeated star once (with the new values), the others NaN in the band they lack; an empty
    table writes nothing."""
    assert refcat.write(tmp_path, star_table(np.array([]), np.array([]))) == []
    (path,) = refcat.write(tmp_path, star_table(np.array([10.1, 10.2, 10.1]), np.array([5.1, 5.2, 5.1])))
    assert sorted(Table.read(path)["r_flux"]) == [1001.0, 1002.0]  # a star twice in one catalogue: the last stays
    second = star_table(np.array([10.2, 10.3]), np.array([5.2, 5.3]))
    second["g_flux"], second["g_flux_err"] = np.array([50.0, 60.0]), np.array([1.0, 1.0])
    (path,) = refcat.write(tmp_path, second)
    held = Table.read(path)
    assert len(held) == 3
    assert set(held.colnames) >= {"ra", "dec", "pm_ra", "pm_dec", "epoch", "r_flux", "g_flux", "g_flux_err"}
    corners = np.array([10.0, 10.5, 10.5, 10.0]), np.array([5.0, 5.0, 5.5, 5.5])
    g = refcat.load(tmp_path, *corners, "g", 2016.0)
    assert np.isnan(g.flux[np.isclose(g.ra, 10.1)]).all()
    assert g.flux[np.isclose(g.ra, 10.2)].tolist() == [50.0]


def test_proper_motion_is_applied_to_the_requested_epoch(tmp_path: Path) -> None:
    """100 mas/yr over 10 years is 1 arcsec: north in Dec; east in RA, which is 1/cos(dec) arcsec of RA."""
    table = star_table(np.array([150.0, 150.1]), np.array([-30.0, -30.1]),
                       pm_ra=np.array([100.0, 0.0]), pm_dec=np.array([0.0, 100.0]))
    refcat.write(tmp_path, table)
    corners = np.array([149.9, 150.2, 150.2, 149.9]), np.array([-30.2, -30.2, -29.9, -29.9])
    then = refcat.load(tmp_path, *corners, "r", 2016.0)
    later = refcat.load(tmp_path, *corners, "r", 2026.0)
    first, second = np.argsort(then.flux)
    assert (later.ra[first] - then.ra[first]) * 3600 * np.cos(np.radians(-30.0)) == pytest.approx(1.0, abs=1e-6)
    assert later.dec[first] == pytest.approx(then.dec[first], abs=1e-12)
    assert (later.dec[second] - then.dec[second]) * 3600 == pytest.approx(1.0, abs=1e-6)
    assert later.ra[second] == pytest.approx(then.ra[second], abs=1e-12)


def test_a_fits_catalogue_with_magnitudes_is_ingested(tmp_path: Path) -> None:
    """AB magnitudes become nJy (g = 20 is 36 308 nJy), magnitude errors flux errors; without proper motions or
    epochs the positions stay put at any epoch."""
    table = Table({"RA": [150.0, 150.05, 149.95], "DEC": [2.0, 2.05, 1.95], "g_mag": [20.0, 21.0, 22.0],
                   "g_mag_err": [0.01, 0.02, 0.05], "r_mag": [19.5, 20.5, np.nan]})
    path = tmp_path / "stars.fits"
    table.write(path)
    done = ingest_refcat(tmp_path / "repo", path)
    assert done.path == tmp_path / "repo" / "refcat"
    assert "3 reference stars" in done.what and "g, r" in done.what
    corners = np.array([149.9, 150.1, 150.1, 149.9]), np.array([1.9, 1.9, 2.1, 2.1])
    g = refcat.load(tmp_path / "repo", *corners, "g", 2030.0)
    order = np.argsort(g.ra)
    np.testing.assert_allclose(g.ra[order], [149.95, 150.0, 150.05], atol=1e-12)
    np.testing.assert_allclose(g.flux[order], 10 ** (-0.4 * (np.array([22.0, 20.0, 21.0]) - 31.4)))
    assert g.flux[order][1] == pytest.approx(36307.8, rel=1e-5)
    held = vstack([Table.read(shard) for shard in refcat.find_shards(tmp_path / "repo", *corners)])
    row = int(np.argmin(np.abs(held["ra"] - 150.0)))
    assert held["g_flux_err"][row] == pytest.approx(held["g_flux"][row] * 0.4 * np.log(10) * 0.01)
    r = refcat.load(tmp_path / "repo", *corners, "r", 2030.0)
    assert np.isnan(r.flux).sum() == 1


def test_a_parquet_catalogue_with_fluxes_is_ingested(tmp_path: Path) -> None:
    """coord_ra and coord_dec (here in radians, as Rubin's refcats have them, converted by their unit), fluxes in
    nJy, proper motions and epochs given (one as an MJD)."""
    table = Table({"coord_ra": np.radians([30.0, 30.1]), "coord_dec": np.radians([-10.0, -10.1]),
                   "i_flux": [5000.0, 7000.0], "i_flux_err": [50.0, 70.0], "pm_ra": [0.0, 0.0],
                   "pm_dec": [100.0, 0.0], "epoch": [2016.0, 57388.5]})
    table["coord_ra"].unit = table["coord_dec"].unit = u.rad
    path = tmp_path / "stars.parquet"
    table.write(path, format="parquet")
    ingest_refcat(tmp_path / "repo", path)
    corners = np.array([29.9, 30.2, 30.2, 29.9]), np.array([-10.2, -10.2, -9.9, -9.9])
    stars = refcat.load(tmp_path / "repo", *corners, "i", 2026.0)
    order = np.argsort(stars.flux)
    assert stars.flux[order].tolist() == [5000.0, 7000.0]
    assert (stars.dec[order][0] + 10.0) * 3600 == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(stars.ra[order], [30.0, 30.1], atol=1e-9)
    held = vstack([Table.read(shard) for shard in refcat.find_shards(tmp_path / "repo", *corners)])
    assert sorted(held["epoch"]) == pytest.approx([2016.0, 2016.0], abs=1e-3)  # MJD 57388.5 is J2016.0


@pytest.mark.parametrize(("columns", "message"), [
    ({"ra": [1.0], "g_mag": [20.0]}, "no position columns: needs ra and dec"),
    ({"ra": [1.0], "dec": [95.0], "g_mag": [20.0]}, r"column dec must be in \[-90, 90\] deg: 1 row"),
    ({"ra": [1.0, 360.0], "dec": [0.0, 0.0], "g_mag": [20.0, 20.0]}, r"column ra must be in \[0, 360\) deg"),
    ({"ra": [1.0], "dec": [np.nan], "g_mag": [20.0]}, r"column dec must be"),
    ({"ra": [1.0], "dec": [0.0], "phot_g_mean_mag": [20.0], "x_flux": [1.0]}, "no band: needs <band>_flux"),
    ({"ra": [1.0], "dec": [0.0], "g_mag": ["bright"]}, "column g_mag is not numeric"),
    ({"ra": [1.0], "dec": [0.0], "g_mag": [20.0], "pm_ra": [5e6]}, "column pm_ra must be within"),
    ({"ra": [1.0], "dec": [0.0], "g_mag": [20.0], "epoch": [1.5]}, "column epoch must be a Julian year"),
    ({"ra": np.array([], dtype=float), "dec": np.array([], dtype=float)}, "no rows"),
])
def test_bad_catalogues_are_refused_and_nothing_is_written(tmp_path: Path, columns: dict[str, list[object]],
                                                          message: str) -> None:
    path = tmp_path / "bad.fits"
    Table(columns).write(path)
    with pytest.raises(IngestError, match=message):
        ingest_refcat(tmp_path / "repo", path)
    assert not (tmp_path / "repo").exists()


def test_what_is_not_a_table_is_refused(tmp_path: Path) -> None:
    """A FITS image, a text file, a missing file, a Parquet file that is not one: each says it is not a table."""
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(image)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    for path in (image, Path(__file__), tmp_path / "missing.fits", broken):
        with pytest.raises(IngestError, match="not a table"):
            ingest_refcat(tmp_path / "repo", path)
    assert not (tmp_path / "repo").exists()
