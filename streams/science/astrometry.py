"""Astrometric calibration: a CCD's stars matched to a reference catalogue, a TAN(-SIP) WCS fitted to them.

LSSTCam raws carry only the boresight, so the pointing WCS (`geometry.detector_wcs`) is off by the telescope's
pointing error and by any error in the camera angle; a rotation about the boresight moves an outer CCD by many
pixels. The match therefore first finds the shift and rotation that align the brightest stars with the reference
stars (a vote over pairwise offsets at a few trial rotations), then matches nearest neighbours within a shrinking
tolerance, clips outliers, and fits with astropy's `fit_wcs_from_points`. Data that cannot be matched make a
flagged fallback to the pointing WCS, never an exception.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS, NoConvergence
from astropy.wcs.utils import fit_wcs_from_points, proj_plane_pixel_scales
from scipy.spatial import cKDTree
from scipy.stats import poisson
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

MAX_CENTROID_RADIUS = 16
"""Largest half-size of the stamp [pixels] a centroid is measured on; the stamp reaches 4 PSF sigmas and a pixel."""
CENTROID_ITERATIONS = 6
VOTE_STARS = (80, 320, 1280)
"""The brightest stars that vote for the offset: enough for a clear peak, few enough to stay fast; more vote when
they make no peak (the brightest stars may be saturated, or missing from the catalogue)."""
VOTE_BIN = 4.0
"""Offset histogram bin [pixels]; the peak is read in a 3 x 3 box of bins, so smearing by a residual rotation or
the pointing WCS's missing distortion of up to a bin is tolerated."""
VOTE_FALSE_ALARM = 0.01
"""Chance that a vote over unrelated stars still makes a peak as high as the threshold."""
SIP_MIN_MATCHES = 30
"""Fewer matches than this: a linear TAN fit (a SIP polynomial would fit the noise)."""
SIP_MIN_COVERAGE = 0.5
"""The matches must span this fraction of the CCD in x and in y for a SIP fit (else it extrapolates)."""
MAX_RMS_ARCSEC = 0.2
"""A fit whose residuals are larger than this is not a solution (a false match or a broken catalogue)."""
CLIP_SIGMA = 3.0
"""Matches farther than this many (robust) rms of the on-sky residuals are dropped: 4.2 sigma per axis."""
MAX_CLIP_ROUNDS = 5
RAYLEIGH_RMS_PER_MEDIAN = np.sqrt(2.0) / np.sqrt(2.0 * np.log(2.0))
"""The rms of 2-D Gaussian offsets' lengths (sqrt 2 sigma) over their median (sqrt(2 ln 2) sigma)."""

_blas_lock = threading.Lock()


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while fitting: the fits do many SVDs of small matrices, which multithreaded OpenBLAS
    makes several times slower on a busy machine (measured: 0.2 s for a full CCD becomes 0.8 s). The limit is
    process-wide, so fits take turns (they hold the GIL most of the time anyway) and restore it in order."""
    with _blas_lock, threadpool_limits(1, "blas"):
        yield


def centroids(image: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel (x, y) of the stars at integer (y, x) `peaks` of a background-subtracted image.

    First a parabola through the log of each star's marginal profile (the sums over 5 rows or columns) at the peak
    and its two neighbours: exact for a Gaussian PSF and gives each star's width. Then a Gaussian-weighted centroid
    with the stars' median width is iterated on a stamp of 4 such widths, each step doubling the weighted offset
    (exact for a matched Gaussian): its fixed point is the centre of any symmetric PSF (near an edge, the window
    shrinks to stay symmetric) and it uses all the star's pixels, so on a star whose peak pixel stands 30 sigma
    above the noise (S/N about 90 in PSF flux) it is good to about 0.03 pixel, the Cramer-Rao bound. A star whose
    pixels are not positive keeps the integer peak (or the parabola) rather than a wild value.
    """
    peaks = np.asarray(peaks, dtype=np.intp).reshape(-1, 2)
    if not len(peaks):
        return np.array([], dtype=float), np.array([], dtype=float)
    data = np.asarray(image, dtype=np.float64)
    height, width = data.shape
    inner = _stamps(data, peaks, 2)
    dx, width_x = _log_parabola(inner[:, :, 1:4].sum(axis=1))
    dy, width_y = _log_parabola(inner[:, 1:4, :].sum(axis=2))
    widths = np.concatenate([width_x, width_y])
    widths = widths[np.isfinite(widths)]
    sigma = float(np.clip(np.median(widths), 0.7, MAX_CENTROID_RADIUS / 4)) if len(widths) else 1.7
    radius = int(np.ceil(4 * sigma)) + 1
    stamps = _stamps(data, peaks, radius)
    offsets = np.arange(-radius, radius + 1)
    yy, xx = offsets[:, None].astype(float), offsets[None, :].astype(float)
    fx, fy = dx.copy(), dy.copy()
    good = np.ones(len(peaks), dtype=bool)
    for _ in range(CENTROID_ITERATIONS):
        # Near an edge, only pixels as close to the centre as the edge is: a symmetric window stays unbiased.
        reach_x = np.minimum(peaks[:, 1] + fx, width - 1 - peaks[:, 1] - fx)[:, None, None]
        reach_y = np.minimum(peaks[:, 0] + fy, height - 1 - peaks[:, 0] - fy)[:, None, None]
        window = (np.abs(xx[None] - fx[:, None, None]) <= reach_x + 1e-9) & \
            (np.abs(yy[None] - fy[:, None, None]) <= reach_y + 1e-9)
        weights = np.exp(-((xx[None] - fx[:, None, None]) ** 2 + (yy[None] - fy[:, None, None]) ** 2)
                         / (2 * sigma ** 2)) * stamps * window
        total = weights.sum(axis=(1, 2))
        good &= total > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = (weights * (xx[None] - fx[:, None, None])).sum(axis=(1, 2)) / total
            my = (weights * (yy[None] - fy[:, None, None])).sum(axis=(1, 2)) / total
        fx = np.where(good, fx + 2 * mx, fx)
        fy = np.where(good, fy + 2 * my, fy)
        good &= (np.abs(fx) <= 1.5) & (np.abs(fy) <= 1.5)
    fx, fy = np.where(good, fx, dx), np.where(good, fy, dy)
    return peaks[:, 1] + fx, peaks[:, 0] + fy


def _stamps(data: np.ndarray, peaks: np.ndarray, radius: int) -> np.ndarray:
    """(stars, 2 radius + 1, 2 radius + 1) pixels around each peak; 0 off the image and where not finite."""
    height, width = data.shape
    offsets = np.arange(-radius, radius + 1)
    rows = peaks[:, 0, None] + offsets[None, :]
    columns = peaks[:, 1, None] + offsets[None, :]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((columns >= 0) & (columns < width))[:, None, :]
    stamps = data[np.clip(rows, 0, height - 1)[:, :, None], np.clip(columns, 0, width - 1)[:, None, :]]
    result: np.ndarray = np.where(inside & np.isfinite(stamps), stamps, 0.0)
    return result


def _log_parabola(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex offset, Gaussian sigma) of a parabola through the log of 3 samples per row; 0 and NaN where the
    samples are not positive or not peaked."""
    left, middle, right = profile[:, 0], profile[:, 1], profile[:, 2]
    positive = (left > 0) & (middle > 0) & (right > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll, lm, lr = np.log(left), np.log(middle), np.log(right)
        curvature = ll - 2 * lm + lr
        ok = positive & (curvature < 0)
        offset = np.where(ok, 0.5 * (ll - lr) / curvature, 0.0)
        sigma = np.where(ok, np.sqrt(-1.0 / curvature), np.nan)
    return np.clip(offset, -1.0, 1.0), sigma


@dataclass(frozen=True)
class Solution:
    """The astrometric fit of one CCD, or the flagged fallback to the pointing WCS."""

    wcs: WCS
    """The fitted WCS, or the initial one when the fit failed."""
    fitted: bool
    """False: fell back to the pointing WCS (flagged, not a crash)."""
    matches: int
    """Stars matched and kept in the final fit."""
    rms_arcsec: float
    """Rms of the on-sky residuals of the kept matches (NaN if not fitted)."""
    star_index: np.ndarray
    """Indices into the given stars of the kept matches."""
    ref_index: np.ndarray
    """Indices into the reference stars, pairwise with star_index."""
    reason: str
    """Why it fell back ("" when fitted)."""


def solve(x: np.ndarray, y: np.ndarray, flux: np.ndarray, initial: WCS, ref_ra: np.ndarray, ref_dec: np.ndarray,
          shape: tuple[int, int], *, search_arcsec: float = 60.0, max_rotation_deg: float = 0.5,
          min_matches: int = 6, sip_degree: int = 2) -> Solution:
    """Fit the WCS of a CCD of `shape` (height, width) from its stars' 0-based pixel positions (x, y) and fluxes
    (only their order matters), starting from the pointing WCS `initial`, against reference stars [deg].

    The initial WCS may be off by up to `search_arcsec` and rotated by up to `max_rotation_deg` about the CCD
    centre. The result is a TAN-SIP WCS (degree `sip_degree`) with enough well-spread matches, else linear TAN, in
    the image's 0-based pixel convention (`wcs.all_pix2world(x, y, 0)`).
    """
    try:
        return _solve(x, y, flux, initial, ref_ra, ref_dec, shape, search_arcsec, max_rotation_deg, min_matches,
                      sip_degree)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, NoConvergence) as error:  # degenerate geometry
        return _fall_back(initial, f"the fit failed: {error}")


def _fall_back(initial: WCS, reason: str) -> Solution:
    empty = np.array([], dtype=np.intp)
    return Solution(initial, False, 0, float("nan"), empty, empty, reason)


def _solve(x: np.ndarray, y: np.ndarray, flux: np.ndarray, initial: WCS, ref_ra: np.ndarray, ref_dec: np.ndarray,
           shape: tuple[int, int], search_arcsec: float, max_rotation_deg: float, min_matches: int,
           sip_degree: int) -> Solution:
    """`solve`, which may raise where astropy or scipy give up on degenerate data."""

    def fall_back(reason: str) -> Solution:
        return _fall_back(initial, reason)

    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    flux = np.asarray(flux, dtype=float).ravel()
    ref_ra, ref_dec = np.asarray(ref_ra, dtype=float).ravel(), np.asarray(ref_dec, dtype=float).ravel()
    if not (len(x) == len(y) == len(flux)) or len(ref_ra) != len(ref_dec):
        return fall_back("stars or reference stars come in arrays of different lengths")
    stars = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(stars) < min_matches:
        return fall_back(f"{len(stars)} stars, fewer than the {min_matches} needed")
    height, width = shape
    scale = float(np.mean(proj_plane_pixel_scales(initial.celestial))) * 3600.0
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    half_diagonal = float(np.hypot(width, height)) / 2.0
    reach = search_arcsec / scale + np.radians(max_rotation_deg) * half_diagonal + 2 * VOTE_BIN

    refs = _refs_near(initial, ref_ra, ref_dec, centre, (half_diagonal + reach) * scale / 3600.0)
    if len(refs):
        rx, ry = (np.asarray(v, dtype=float) for v in initial.all_world2pix(ref_ra[refs], ref_dec[refs], 0))
        padded = (rx >= -reach) & (rx <= width - 1 + reach) & (ry >= -reach) & (ry <= height - 1 + reach)
        refs, rx, ry = refs[padded], rx[padded], ry[padded]
    if len(refs) < min_matches:
        return fall_back(f"{len(refs)} reference stars on and around the CCD, fewer than the {min_matches} needed")

    brightness = np.where(np.isfinite(flux[stars]), flux[stars], -np.inf)
    by_brightness = stars[np.argsort(-brightness, kind="stable")]
    aligned = None
    for voters in VOTE_STARS:
        bright = by_brightness[:voters]
        aligned = _vote(x[bright], y[bright], rx, ry, centre, reach, max_rotation_deg, half_diagonal,
                        max(3, min(min_matches, 5)))
        if aligned is not None or voters >= len(by_brightness):
            break
    if aligned is None:
        return fall_back("no consistent offset between the stars and the reference stars")
    theta, shift = aligned
    cos, sin = np.cos(theta), np.sin(theta)
    px = cos * (rx - centre[0]) - sin * (ry - centre[1]) + centre[0] + shift[0]
    py = sin * (rx - centre[0]) + cos * (ry - centre[1]) + centre[1] + shift[1]

    tolerance = 3 * VOTE_BIN
    star_ids, ref_ids = _match(x[stars], y[stars], px, py, tolerance)
    if len(star_ids) < min_matches:
        return fall_back(f"{len(star_ids)} stars match the aligned reference stars, fewer than {min_matches}")
    star_ids, ref_ids = stars[star_ids], refs[ref_ids]
    with _single_threaded_blas():
        first, _, _, robust = _fit_clipped(x, y, ref_ra, ref_dec, star_ids, ref_ids, None, initial, min_matches)
    if first is None:
        return fall_back(f"too few matches left after clipping the first fit (of {len(star_ids)})")

    # Re-match everything through the first fit with a tolerance set by its residuals, then fit with SIP.
    rx, ry = (np.asarray(v, dtype=float) for v in first.all_world2pix(ref_ra[refs], ref_dec[refs], 0, quiet=True))
    tolerance = float(np.clip(5 * robust / scale, 1.0, tolerance))
    star_ids, ref_ids = _match(x[stars], y[stars], rx, ry, tolerance)
    star_ids, ref_ids = stars[star_ids], refs[ref_ids]
    spread = (np.ptp(x[star_ids]) >= SIP_MIN_COVERAGE * width and np.ptp(y[star_ids]) >= SIP_MIN_COVERAGE * height
              if len(star_ids) else False)
    degree = sip_degree if sip_degree > 1 and len(star_ids) >= SIP_MIN_MATCHES and spread else None
    if len(star_ids) < min_matches:
        return fall_back(f"{len(star_ids)} stars match after the first fit, fewer than {min_matches}")
    with _single_threaded_blas():
        wcs, keep, rms, _ = _fit_clipped(x, y, ref_ra, ref_dec, star_ids, ref_ids, degree, first, min_matches)
    if wcs is None:
        return fall_back(f"too few matches left after clipping (of {len(star_ids)})")
    if not rms <= MAX_RMS_ARCSEC:
        return fall_back(f"the fit's residual rms {rms:.2f} arcsec is above {MAX_RMS_ARCSEC} arcsec")
    wcs.pixel_shape = (width, height)
    return Solution(wcs, True, int(keep.sum()), rms, star_ids[keep], ref_ids[keep], "")


def _refs_near(initial: WCS, ra: np.ndarray, dec: np.ndarray, centre: np.ndarray, radius_deg: float) -> np.ndarray:
    """Indices of the reference stars within `radius_deg` of the CCD centre (before projecting them, since a
    gnomonic projection of stars far away is meaningless)."""
    centre_ra, centre_dec = (float(v) for v in initial.all_pix2world(centre[0], centre[1], 0))
    ra1, dec1, ra2, dec2 = np.radians(ra), np.radians(dec), np.radians(centre_ra), np.radians(centre_dec)
    with np.errstate(invalid="ignore"):
        haversine = np.sin((dec1 - dec2) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra1 - ra2) / 2) ** 2
        distance = 2 * np.degrees(np.arcsin(np.sqrt(np.clip(haversine, 0, 1))))
    return np.flatnonzero(np.isfinite(distance) & (distance <= radius_deg))


def _vote(sx: np.ndarray, sy: np.ndarray, rx: np.ndarray, ry: np.ndarray, centre: np.ndarray, reach: float,
          max_rotation_deg: float, half_diagonal: float, min_votes: int) -> tuple[float, np.ndarray] | None:
    """(rotation [rad], shift [pixels]) such that star = R(rotation) (ref - centre) + centre + shift for most bright
    stars, from the peak of a histogram of star - reference offsets at trial rotations; None without a peak well
    above what unrelated stars would make."""
    step = min(max_rotation_deg, float(np.degrees(VOTE_BIN / half_diagonal)))
    trials = int(np.ceil(max_rotation_deg / step)) if step > 0 else 0
    thetas = np.radians(np.linspace(-max_rotation_deg, max_rotation_deg, 2 * trials + 1)) if trials else np.zeros(1)
    tree = cKDTree(np.column_stack([rx - centre[0], ry - centre[1]]))
    bins = 2 * int(np.ceil(reach / VOTE_BIN)) + 1
    best: tuple[int, float, float, int, int] | None = None  # votes, |theta|, theta, bin x, bin y
    offsets_at: dict[float, np.ndarray] = {}
    total_votes = 0
    for theta in thetas:
        cos, sin = np.cos(theta), np.sin(theta)
        ux = cos * (sx - centre[0]) + sin * (sy - centre[1])
        uy = -sin * (sx - centre[0]) + cos * (sy - centre[1])
        near = tree.query_ball_point(np.column_stack([ux, uy]), reach)
        counts = np.fromiter((len(found) for found in near), dtype=np.intp, count=len(near))
        if not counts.sum():
            continue
        which = np.concatenate([np.asarray(found, dtype=np.intp) for found in near])
        star = np.repeat(np.arange(len(ux)), counts)
        offsets = np.column_stack([ux[star] - tree.data[which, 0], uy[star] - tree.data[which, 1]])
        offsets_at[float(theta)] = offsets
        total_votes += len(offsets)
        cells = np.floor((offsets + reach) / VOTE_BIN).astype(np.intp).clip(0, bins - 1)
        grid = np.bincount(cells[:, 0] * bins + cells[:, 1], minlength=bins * bins).reshape(bins, bins)
        padded = np.pad(grid, 1)
        boxed = np.zeros_like(grid)
        for i in range(3):
            for j in range(3):
                boxed += padded[i:i + bins, j:j + bins]
        peak_x, peak_y = (int(v) for v in np.unravel_index(int(np.argmax(boxed)), boxed.shape))
        candidate = (int(boxed[peak_x, peak_y]), -abs(float(theta)), float(theta), peak_x, peak_y)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return None
    votes, _, theta, bx, by = best
    # Unrelated stars: votes spread evenly over the search disc; a peak must beat the highest such box.
    mean_box = total_votes / len(thetas) / (np.pi * reach ** 2) * (3 * VOTE_BIN) ** 2
    boxes = bins * bins * len(thetas)
    threshold = max(min_votes, int(poisson.isf(VOTE_FALSE_ALARM / boxes, mean_box)) + 1)
    if votes < threshold:
        return None
    offsets = offsets_at[theta]
    low = (np.array([bx, by]) - 1) * VOTE_BIN - reach
    inside = np.all((offsets >= low) & (offsets < low + 3 * VOTE_BIN), axis=1)
    ex, ey = np.median(offsets[inside], axis=0)
    cos, sin = np.cos(theta), np.sin(theta)
    return theta, np.array([cos * ex - sin * ey, sin * ex + cos * ey])


def _match(x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray,
           tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(star indices, reference indices) of nearest neighbours within `tolerance` pixels, each reference star
    matched to at most one star (the closest)."""
    if not len(rx) or not len(x):
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    distance, nearest = cKDTree(np.column_stack([rx, ry])).query(np.column_stack([x, y]),
                                                                  distance_upper_bound=tolerance)
    found = np.flatnonzero(np.isfinite(distance))
    found = found[np.argsort(distance[found], kind="stable")]
    _, first = np.unique(nearest[found], return_index=True)
    found = np.sort(found[first])
    return found, nearest[found]


def _fit_clipped(x: np.ndarray, y: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray, star_ids: np.ndarray,
                 ref_ids: np.ndarray, degree: int | None, guess: WCS,
                 min_matches: int) -> tuple[WCS | None, np.ndarray, float, float]:
    """(WCS, kept matches, rms [arcsec], robust rms [arcsec]): fitted, then refitted to the matches within 3 sigma of
    the on-sky residuals until they no longer change; (None, ..) when fewer than `min_matches` would remain.

    Sigma is robust (from the median distance, as for a 2-D Gaussian): where the catalogue lacks many of the stars,
    a third of the first matches can be chance neighbours, which would inflate a plain rms enough to keep them all.
    A match dropped by an early, contaminated fit comes back when a later fit puts it within the limit.
    """
    keep = np.ones(len(star_ids), dtype=bool)
    wcs = guess
    for round_ in range(MAX_CLIP_ROUNDS + 1):
        if keep.sum() < max(min_matches, 3):
            return None, keep, float("nan"), float("nan")
        s, r = star_ids[keep], ref_ids[keep]
        wcs = _fit(x[s], y[s], ref_ra[r], ref_dec[r], degree, wcs)
        residual = _residuals_arcsec(wcs, x[star_ids], y[star_ids], ref_ra[ref_ids], ref_dec[ref_ids])
        rms = float(np.sqrt(np.mean(residual[keep] ** 2)))
        robust = RAYLEIGH_RMS_PER_MEDIAN * float(np.median(residual[keep]))
        within = residual <= max(CLIP_SIGMA * robust, 1e-4)
        if np.array_equal(within, keep) or round_ == MAX_CLIP_ROUNDS:
            return wcs, keep, rms, robust
        keep = within
    return wcs, keep, rms, robust


def _fit(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, degree: int | None, guess: WCS) -> WCS:
    """A TAN (or TAN-SIP of `degree`) WCS through matched pixel and sky positions, tangent at the matches' middle
    (astropy's own choice of the middle breaks where the RA wraps at 0/360), starting from the linear part of
    `guess` (which makes the fit several times faster)."""
    middle = int(np.argmin(np.hypot(x - (x.min() + x.max()) / 2, y - (y.min() + y.max()) / 2)))
    tangent = SkyCoord(ra[middle] * u.deg, dec[middle] * u.deg)
    sky = SkyCoord(ra * u.deg, dec * u.deg)
    template = WCS(naxis=2)
    template.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    template.wcs.radesys = "ICRS"
    template.wcs.cd = guess.celestial.pixel_scale_matrix
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "cdelt will be ignored", RuntimeWarning)  # astropy resets CDELT
        wcs: WCS = fit_wcs_from_points((x, y), sky, proj_point=tangent, projection=template, sip_degree=degree)
    return wcs


def _residuals_arcsec(wcs: WCS, x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """On-sky distance [arcsec] between where the WCS puts each star and its reference star."""
    fit_ra, fit_dec = (np.asarray(v, dtype=float) for v in wcs.all_pix2world(x, y, 0))
    d_ra = (fit_ra - ra + 180.0) % 360.0 - 180.0
    result: np.ndarray = np.hypot(d_ra * np.cos(np.radians(dec)), fit_dec - dec) * 3600.0
    return result
