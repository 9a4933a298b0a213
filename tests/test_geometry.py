"""Tests of skyeq.geometry and its kernels (footprints, pairs, overlaps, pixel spans)."""

import dataclasses
import itertools
import pickle
from fractions import Fraction

import numpy as np
import pytest
from astropy.wcs import WCS, Sip
from geometry_helpers import (
    boundary_gap,
    check_spans_format,
    gnomonic,
    inside_closed,
    misplaced_span_pixels,
    spans_to_mask,
    truth_mask,
    xyz,
)
from scipy.ndimage import binary_dilation

import skyeq
from skyeq import _kernels as gk
from skyeq import geometry as geo
from skyeq.wcs import as_wcs_adapter

SHAPE = (150, 200)  # (ny, nx) of the small test images


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def make_wcs(ra, dec, rot=0.0, scale=20.0, shape=SHAPE, sip=0.0, crpix_shift=(0.0, 0.0)):
    """TAN (optionally TAN-SIP with a cubic radial term) WCS; scale in arcsec/pixel."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2 + crpix_shift[0], (ny + 1) / 2 + crpix_shift[1]]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = scale / 3600.0 * np.array([[-c, s], [s, c]])
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[3, 0] = a[1, 2] = b[0, 3] = b[2, 1] = sip  # u' = u (1 + k r^2)
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def outline_pixels(shape, stepsize):
    """The reference's outline sampling, written independently from the spec (3.1)."""
    ny, nx = shape
    kx = 2 if stepsize is None else max(2, int(np.ceil((nx + 1.0) / stepsize)))
    ky = 2 if stepsize is None else max(2, int(np.ceil((ny + 1.0) / stepsize)))
    xs = np.linspace(-0.5, nx - 0.5, kx)
    ys = np.linspace(-0.5, ny - 0.5, ky)[1:-1]
    pts = [(x, -0.5) for x in xs] + [(nx - 0.5, y) for y in ys]
    pts += [(x, ny - 0.5) for x in xs[::-1]] + [(-0.5, y) for y in ys[::-1]]
    return np.array(pts).T


def sky_footprint(w, shape, stepsize=None):
    """Unit-vector outline of an image, computed directly with astropy."""
    x, y = outline_pixels(shape, stepsize)
    ra, dec = w.all_pix2world(x, y, 0)
    return xyz(ra, dec)


def sg_area(fa, fb, exact=False):
    """Overlap area by spherical_geometry, or None if it raises.

    spherical_geometry's own area() (a Girard angle sum) has an absolute error of
    ~1e-15 sr, i.e. ~1e-9 relative for a 1e-6 sr overlap; with ``exact=True`` the
    pair ``(area(), fan area of its polygon)`` is returned, the second recomputed with
    the (independently checked) triangle-fan kernel, which compares vertices rather
    than area sums.
    """
    try:
        poly = fa.polygon.intersection(fb.polygon)
    except Exception:
        return None
    if not exact:
        return abs(poly.area())
    total = 0.0
    for pts in poly.points:
        ring = np.ascontiguousarray(np.asarray(pts)[:-1])
        apex = ring.sum(axis=0) / np.linalg.norm(ring.sum(axis=0))
        total += abs(gk.ring_area(ring, apex))
    return abs(poly.area()), total


# --------------------------------------------------------------------------------------
# scenes: lists of WCS with the test image shape
# --------------------------------------------------------------------------------------


def scene_tiles(rng, ra0=150.0, dec0=2.0):
    """3x3 tiles with ~10 % overlaps and small random rotations."""
    step = 0.9 * SHAPE[1] * 20.0 / 3600.0
    out = []
    for i, j in itertools.product(range(3), range(3)):
        dec = dec0 + (i - 1) * step * SHAPE[0] / SHAPE[1]
        ra = ra0 + (j - 1) * step / np.cos(np.radians(dec))
        out.append(make_wcs(ra, dec, rot=rng.uniform(-5, 5)))
    return out


def scene_dithers(rng, sip=0.0, n=7):
    """Dithers: offsets of up to ~30 pixels and rotations of up to 20 degrees."""
    return [
        make_wcs(
            210.0 + rng.uniform(-0.15, 0.15),
            -40.0 + rng.uniform(-0.15, 0.15),
            rot=rng.uniform(-20, 20),
            sip=sip,
        )
        for _ in range(n)
    ]


def scene_pole(rng):
    """Images around and on the north celestial pole."""
    out = [make_wcs(0.0, 90.0, rot=rng.uniform(0, 90))]
    for k in range(6):
        out.append(make_wcs(60.0 * k + rng.uniform(-5, 5), 89.6, rot=rng.uniform(0, 90)))
    return out


def scene_ra0(rng):
    """Images straddling RA = 0 / 360."""
    return [
        make_wcs(ra % 360.0, dec, rot=rng.uniform(-30, 30))
        for ra, dec in [(-0.5, 0.0), (0.0, 0.3), (0.4, -0.2), (359.8, 0.5), (0.2, 0.8)]
    ]


SCENES = {
    "tiles": (scene_tiles, None),
    "dithers": (scene_dithers, None),
    "sip-stepsize": (lambda rng: scene_dithers(rng, sip=2e-6, n=4), 25),
    "pole": (scene_pole, None),
    "ra0": (scene_ra0, None),
}


# --------------------------------------------------------------------------------------
# footprints
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "stepsize", "nvert"),
    [((2048, 2048), None, 4), ((2048, 2048), 500, 16), ((150, 200), 64, 2 * (4 + 3 - 2))],
)
def test_outline_sampling_follows_the_reference(shape, stepsize, nvert):
    x, y = geo._outline(shape[1], shape[0], stepsize)
    ex, ey = outline_pixels(shape, stepsize)
    assert len(x) == nvert
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    if stepsize == 500:  # five points per side, spacing 512 > stepsize
        assert np.unique(x[y == -0.5]).tolist() == [-0.5, 511.5, 1023.5, 1535.5, 2047.5]


@pytest.mark.parametrize("stepsize", [None, 25])
def test_footprint_geometry(stepsize):
    w = make_wcs(30.0, -60.0, rot=33.0, sip=2e-6 if stepsize else 0.0)
    fp = geo.footprint(w, SHAPE, stepsize=stepsize, name="img")
    assert fp.name == "img"
    assert fp.shape == SHAPE
    ring = sky_footprint(w, SHAPE, stepsize)
    assert len(fp.vertices) == len(ring)
    # same points as the reference outline (possibly reversed to counter-clockwise)
    same = np.allclose(fp.vertices, ring, atol=1e-15) or np.allclose(
        fp.vertices, ring[::-1], atol=1e-15
    )
    assert same
    # counter-clockwise seen from outside: positive triple products about the centre
    v = fp.vertices
    assert np.all(np.cross(v, np.roll(v, -1, 0)) @ fp.centre > 0)
    # cap covers every vertex, and is tight
    ang = np.arccos(np.clip(v @ fp.centre, -1, 1))
    assert ang.max() <= fp.radius * (1 + 1e-12)
    assert ang.max() >= fp.radius * (1 - 1e-9)
    # area: spherical_geometry agrees (footprints ~1 deg: its Girard sum is good to ~1e-11)
    assert fp.area == pytest.approx(abs(fp.polygon.area()), rel=1e-9)
    assert fp.area == pytest.approx(200 * 150 * np.radians(20 / 3600) ** 2, rel=0.05)
    assert not fp.vertices.flags.writeable
    if stepsize:  # pincushion SIP bows the sampled edges inwards: several convex parts
        assert len(fp.parts) > 1
    else:
        assert len(fp.parts) == 1
    fp2 = pickle.loads(pickle.dumps(fp))
    np.testing.assert_array_equal(fp2.vertices, fp.vertices)
    assert fp2.area == fp.area


def test_footprint_validation():
    w = make_wcs(10.0, 10.0)
    with pytest.raises(ValueError, match="shape of image 3"):
        geo.footprints([w] * 4, [SHAPE, SHAPE, SHAPE, (0, 5)])
    with pytest.raises(ValueError, match="one per image"):
        geo.footprints([w, w], [SHAPE])
    with pytest.raises(ValueError, match="stepsize"):
        geo.footprint(w, SHAPE, stepsize=0)
    with pytest.raises(TypeError, match="image 1"):
        geo.footprints([w, None], [SHAPE, SHAPE])


def test_convex_parts_of_a_dented_ring_cover_it():
    # a square with a dent: parts must be convex and their areas sum to the ring's
    c = np.array([1.0, 0.0, 0.0])
    pts = np.array([[-1, -1], [1, -1], [1, 1], [0.3, 0.9], [0, 0.2], [-0.4, 0.95], [-1, 1]]) * 1e-3
    v = np.column_stack((np.ones(len(pts)), pts))
    v /= np.linalg.norm(v, axis=1)[:, None]
    idx, off, status = gk.convex_parts(v, c)
    assert status == 1
    total = 0.0
    for k in range(len(off) - 1):
        part = v[idx[off[k] : off[k + 1]]]
        assert gk.geometry._ring_convexity(*gnomonic(part, c)) == 1
        total += gk.ring_area(np.ascontiguousarray(part), c)
    assert total == pytest.approx(gk.ring_area(v, c), rel=1e-12)
    assert len(off) - 1 <= 4
    # a self-intersecting (bow-tie) ring is refused
    bow = np.column_stack((np.ones(4), np.array([[-1, -1], [1, 1], [1, -1], [-1, 1]]) * 1e-3))
    bow /= np.linalg.norm(bow, axis=1)[:, None]
    assert gk.convex_parts(bow, c)[2] == 2


# --------------------------------------------------------------------------------------
# candidate pairs
# --------------------------------------------------------------------------------------


def test_candidate_pairs_match_brute_force():
    rng = np.random.default_rng(5)
    ws = [
        make_wcs(
            rng.uniform(0, 20),
            rng.uniform(-10, 10),
            rot=rng.uniform(0, 90),
            scale=rng.uniform(5, 60),
        )
        for _ in range(150)
    ]
    fps = geo.footprints(ws, [SHAPE] * len(ws))
    got = geo.candidate_pairs(fps)
    c = np.array([f.centre for f in fps])
    r = np.array([f.radius for f in fps])
    sep = np.arccos(np.clip(c @ c.T, -1, 1))
    i, j = np.nonzero(np.triu(sep <= r[:, None] + r[None, :], k=1))
    expect = np.column_stack((i, j))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expect)
    assert 50 < len(got) < 150 * 149 // 2 // 4  # a real test: neither empty nor all pairs
    # between two lists: same pairs, re-indexed
    a, b = fps[:60], fps[60:]
    between = geo.candidate_pairs_between(a, b)
    cross = expect[(expect[:, 0] < 60) & (expect[:, 1] >= 60)] - [0, 60]
    np.testing.assert_array_equal(between, cross)
    assert geo.candidate_pairs(fps[:1]).shape == (0, 2)


# --------------------------------------------------------------------------------------
# intersections against spherical_geometry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scene", list(SCENES))
def test_overlap_areas_match_spherical_geometry(scene):
    make, stepsize = SCENES[scene]
    ws = make(np.random.default_rng(sorted(SCENES).index(scene)))
    fps = geo.footprints(ws, [SHAPE] * len(ws), stepsize=stepsize)
    cand = {tuple(p) for p in geo.candidate_pairs(fps)}
    ovs = dict(zip(sorted(cand), geo.intersect_many(fps, sorted(cand)), strict=True))
    compared = overlapping = 0
    for i, j in itertools.combinations(range(len(fps)), 2):
        both = sg_area(fps[i], fps[j], exact=True)
        ref, ref_exact = (None, None) if both is None else both
        if (i, j) not in cand:
            assert ref in (None, 0.0), f"pair {(i, j)} overlaps but is not a candidate"
            continue
        ov = ovs[(i, j)]
        if ref is None:
            continue
        compared += 1
        if ref == 0.0:
            assert ov.is_empty and ov.area == 0.0
            continue
        overlapping += 1
        assert ov.area == pytest.approx(ref, rel=1e-9), (i, j)
        assert ov.area == pytest.approx(ref_exact, rel=1e-11)
        apexes = [p.mean(0) / np.linalg.norm(p.mean(0)) for p in ov.pieces]
        piece_sum = sum(gk.ring_area(p, a) for p, a in zip(ov.pieces, apexes, strict=True))
        assert ov.area == pytest.approx(piece_sum, rel=1e-12)
        # each piece lies inside both footprints (vertices within rounding)
        for p in ov.pieces:
            for f in (fps[i], fps[j]):
                vx, vy = gnomonic(f.vertices, f.centre)
                qx, qy = gnomonic(p, f.centre)
                scale = np.ptp(vx)
                ok = inside_closed(qx, qy, vx, vy)
                # a vertex on an edge may land a rounding error outside
                near = boundary_gap(qx[~ok], qy[~ok], vx, vy) <= 1e-12 * scale
                assert np.all(near)
    assert overlapping >= 4
    assert compared >= overlapping


def test_identical_and_nearly_identical_footprints():
    w = make_wcs(80.0, 45.0, rot=12.0)
    fa = geo.footprint(w, SHAPE)
    ov = geo.intersect(fa, fa)
    assert len(ov.pieces) == 1
    assert ov.area == pytest.approx(fa.area, rel=1e-12)
    # a zero-offset dither built from a separate WCS, and one 1e-9 pixel away
    for shift in (0.0, 1e-9, -3e-7):
        fb = geo.footprint(make_wcs(80.0, 45.0, rot=12.0, crpix_shift=(shift, shift)), SHAPE)
        ov = geo.intersect(fa, fb)
        assert ov.area == pytest.approx(fa.area, rel=1e-8)
        spans = geo.overlap_spans(ov, w, SHAPE)
        assert geo._npix(spans) == SHAPE[0] * SHAPE[1]
    # SIP + stepsize (non-convex, several parts) identical footprints
    ws = make_wcs(80.0, 45.0, rot=12.0, sip=2e-6)
    fs = geo.footprint(ws, SHAPE, stepsize=25)
    ov = geo.intersect(fs, geo.footprint(ws, SHAPE, stepsize=25))
    assert ov.area == pytest.approx(fs.area, rel=1e-12)
    assert geo._npix(geo.overlap_spans(ov, ws, SHAPE)) == SHAPE[0] * SHAPE[1]


def test_touching_footprints_have_no_overlap():
    # the same tangent plane, shifted by exactly one image width / height
    ny, nx = SHAPE
    w0 = make_wcs(10.0, 20.0, rot=7.0)
    right = make_wcs(10.0, 20.0, rot=7.0, crpix_shift=(-nx, 0))
    corner = make_wcs(10.0, 20.0, rot=7.0, crpix_shift=(-nx, -ny))
    fps = geo.footprints([w0, right, corner], [SHAPE] * 3)
    for j in (1, 2):
        ov = geo.intersect(fps[0], fps[j])
        assert ov.is_empty
        assert ov.area == 0.0
    # and one pixel further in they do overlap, by one column of pixels
    inner = geo.footprint(make_wcs(10.0, 20.0, rot=7.0, crpix_shift=(-nx + 1, 0)), SHAPE)
    ov = geo.intersect(fps[0], inner)
    assert ov.area == pytest.approx(fps[0].area / nx, rel=1e-3)
    spans = geo.overlap_spans(ov, w0, SHAPE)
    np.testing.assert_array_equal(spans[:, 1:], np.tile([nx - 1, nx - 1], (ny, 1)))


def test_image_inside_another():
    big = make_wcs(45.0, 10.0, rot=0.0)
    small = make_wcs(45.01, 10.02, rot=25.0, scale=5.0)
    fb, fs = geo.footprints([big, small], [SHAPE, SHAPE])
    ov = geo.intersect(fb, fs)
    assert len(ov.pieces) == 1
    assert ov.area == pytest.approx(fs.area, rel=1e-12)
    assert geo._npix(geo.overlap_spans(ov, small, SHAPE)) == SHAPE[0] * SHAPE[1]
    inbig = geo.overlap_spans(ov, big, SHAPE)
    assert geo._npix(inbig) == pytest.approx(SHAPE[0] * SHAPE[1] / 16, rel=0.05)
    # same answer either way round
    assert geo.intersect(fs, fb).area == pytest.approx(ov.area, rel=1e-12)


def test_large_footprints_use_the_spherical_fallback():
    def car(lon):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---CAR", "DEC--CAR"]
        w.wcs.crval = [lon, 0.0]
        w.wcs.crpix = [50.5, 50.5]
        w.wcs.cdelt = [-1.6, 1.6]
        return w

    fa, fb = geo.footprints([car(0.0), car(60.0)], [(100, 100), (100, 100)], stepsize=25)
    assert fa.radius > np.radians(70)
    assert fa.parts == ()
    ov = geo.intersect(fa, fb)
    ref = abs(fa.polygon.intersection(fb.polygon).area())
    assert ov.area == pytest.approx(ref, rel=1e-9)
    assert 0.1 < ov.area / fa.area < 0.9


# --------------------------------------------------------------------------------------
# scan conversion kernel
# --------------------------------------------------------------------------------------


def scan(pieces, shape, groups=None):
    px = np.concatenate([np.asarray(p, float)[:, 0] for p in pieces])
    py = np.concatenate([np.asarray(p, float)[:, 1] for p in pieces])
    off = np.concatenate(([0], np.cumsum([len(p) for p in pieces]))).astype(np.int64)
    goff = np.array([0, len(pieces)] if groups is None else groups, dtype=np.int64)
    spans, soff = gk.scan_spans(px, py, off, goff, shape[0], shape[1])
    return spans, soff


def exact_closed_mask(pieces, shape):
    """Brute force with exact rational arithmetic: union of closed even-odd polygons."""
    ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    for poly in pieces:
        v = [(Fraction(x), Fraction(y)) for x, y in poly]
        m = len(v)
        for r, c in itertools.product(range(ny), range(nx)):
            if mask[r, c]:
                continue
            on = False
            odd = False
            for i in range(m):
                (x0, y0), (x1, y1) = v[i], v[(i + 1) % m]
                cross = (x1 - x0) * (r - y0) - (y1 - y0) * (c - x0)
                within = min(x0, x1) <= c <= max(x0, x1) and min(y0, y1) <= r <= max(y0, y1)
                if cross == 0 and within:
                    on = True
                    break
                if (y0 > r) != (y1 > r):
                    xint = x0 + (r - y0) * (x1 - x0) / (y1 - y0)
                    if c < xint:
                        odd = not odd
            mask[r, c] = on or odd
    return mask


def test_scan_hand_made_polygons():
    shape = (10, 12)
    # square with integer corners: closed, 4 x 4 centres
    spans, _ = scan([[(2, 1), (5, 1), (5, 4), (2, 4)]], shape)
    np.testing.assert_array_equal(spans, [[1, 2, 5], [2, 2, 5], [3, 2, 5], [4, 2, 5]])
    # pixel-edge square 1.5 .. 4.5: 3 x 3
    spans, _ = scan([[(1.5, 1.5), (4.5, 1.5), (4.5, 4.5), (1.5, 4.5)]], shape)
    assert geo._npix(spans) == 9
    # diamond with vertices on rows: 1 + 3 + 5 + 7 + 5 + 3 + 1, including the lone top
    # and bottom vertices (local extrema of y)
    spans, _ = scan([[(5, 1), (8, 4), (5, 7), (2, 4)]], shape)
    np.testing.assert_array_equal(spans[:, 0], np.arange(1, 8))
    np.testing.assert_array_equal(spans[:, 2] - spans[:, 1] + 1, [1, 3, 5, 7, 5, 3, 1])
    # clockwise order gives the same pixels
    spans_cw, _ = scan([[(2, 4), (5, 7), (8, 4), (5, 1)]], shape)
    np.testing.assert_array_equal(spans_cw, spans)
    # clipped to the image
    spans, _ = scan([[(-5, -5), (50, -5), (50, 50), (-5, 50)]], shape)
    np.testing.assert_array_equal(spans, [[r, 0, 11] for r in range(10)])
    # nothing: outside, NaN vertex, degenerate
    for poly in ([(20, 20), (30, 20), (25, 30)], [(1, 1), (np.nan, 1), (3, 3)], [(1, 1), (2, 2)]):
        spans, soff = scan([poly], shape)
        assert spans.shape == (0, 3)
        np.testing.assert_array_equal(soff, [0, 0])
    # union of overlapping pieces: no pixel twice, merged spans
    spans, _ = scan([[(1, 1), (5, 1), (5, 3), (1, 3)], [(4, 2), (9, 2), (9, 5), (4, 5)]], shape)
    m = spans_to_mask(spans, shape)
    assert m.sum() == 15 + 24 - 4
    assert len(spans) == 5  # rows 1..5, one span each
    # two groups in one call
    spans, soff = scan(
        [[(1, 1), (3, 1), (3, 3)], [(0, 0), (1, 0), (1, 1)], [(5, 5), (7, 5), (7, 7)]],
        shape,
        groups=[0, 2, 3],
    )
    np.testing.assert_array_equal(soff, [0, 4, 7])  # row 1 of group 0 merges


def test_scan_matches_exact_brute_force_on_grid_polygons():
    rng = np.random.default_rng(11)
    shape = (9, 11)
    for trial in range(60):
        npieces = 1 + trial % 3
        pieces = []
        for _ in range(npieces):
            m = rng.integers(3, 8)
            # vertices on a half-pixel grid, partly outside the image: many exact ties
            pts = rng.integers(-4, 26, size=(m, 2)) / 2.0
            pieces.append([tuple(p) for p in pts])
        spans, _ = scan(pieces, shape)
        check_spans_format(spans, shape)
        np.testing.assert_array_equal(spans_to_mask(spans, shape), exact_closed_mask(pieces, shape))


# --------------------------------------------------------------------------------------
# overlap spans against brute force and against the reference fill
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scene", ["tiles", "dithers", "pole", "ra0"])
def test_overlap_pixels_equal_brute_force(scene):
    make, stepsize = SCENES[scene]
    ws = make(np.random.default_rng(100 + sorted(SCENES).index(scene)))
    fps = geo.footprints(ws, [SHAPE] * len(ws), stepsize=stepsize)
    pairs, ovs = geo.find_overlaps(fps)
    assert len(pairs) >= 3
    rings = [sky_footprint(w, SHAPE) for w in ws]
    for k in range(min(len(ws), 4)):
        rows = [r for r in range(len(pairs)) if k in pairs[r]]
        spans_list = geo.overlap_spans_many([ovs[r] for r in rows], ws[k], SHAPE)
        for r, spans in zip(rows, spans_list, strict=True):
            check_spans_format(spans, SHAPE)
            i, j = pairs[r]
            truth = truth_mask(ws[k], SHAPE, [rings[i], rings[j]])
            got = spans_to_mask(spans, SHAPE)
            assert truth.sum() > 0
            np.testing.assert_array_equal(got, truth)


@pytest.mark.parametrize("scene", ["tiles", "dithers", "pole", "ra0"])
def test_straight_edges_are_not_split_and_give_the_same_spans(scene):
    # in a plain TAN frame only the overlap vertices are mapped; splitting the edges
    # into 64-pixel parts first (as for any other WCS) finds the very same pixels
    make, stepsize = SCENES[scene]
    ws = make(np.random.default_rng(7))
    fps = geo.footprints(ws, [SHAPE] * len(ws), stepsize=stepsize)
    pairs, ovs = geo.find_overlaps(fps)
    for k in range(min(len(ws), 3)):
        ad = as_wcs_adapter(ws[k], shape=SHAPE)
        assert ad.straight
        rows = [r for r in range(len(pairs)) if k in pairs[r]]
        fast = geo.overlap_spans_many([ovs[r] for r in rows], ad, SHAPE)
        split = geo.overlap_spans_many([ovs[r] for r in rows],
                                       dataclasses.replace(ad, straight=False), SHAPE)
        assert sum(len(a) for a in fast) > 0
        for a, b in zip(fast, split, strict=True):
            np.testing.assert_array_equal(a, b)


def test_overlap_pixels_with_sip_follow_the_curved_boundary():
    ws = scene_dithers(np.random.default_rng(7), sip=2e-6, n=4)
    fps = geo.footprints(ws, [SHAPE] * 4, stepsize=25)
    pairs, ovs = geo.find_overlaps(fps)
    assert len(pairs) == 6
    rings = [sky_footprint(w, SHAPE, 25) for w in ws]
    nbad = 0
    for (i, j), ov in zip(pairs, ovs, strict=True):
        for k in (i, j):
            # the polygon follows the true (curved in pixels) boundary to 1e-3 pixel
            spans = geo.overlap_spans(ov, ws[k], SHAPE)
            nbad += misplaced_span_pixels(spans, ws[k], SHAPE, [rings[i], rings[j]], 20.0)
    assert nbad <= 3
    # without densification (one straight segment per edge) the error is visible
    ov = ovs[0]
    k = pairs[0][0]
    coarse = spans_to_mask(geo.overlap_spans(ov, ws[k], SHAPE, max_edge=1e6, tolerance=1e6), SHAPE)
    truth = truth_mask(ws[k], SHAPE, [rings[pairs[0][0]], rings[pairs[0][1]]])
    assert (coarse != truth).sum() > 0


def reference_fill(wa, wb, shape, stepsize=None):
    """stcal 1.20 overlap mask of image a with image b (SkyImage + gwcs region scan)."""
    skyimage = pytest.importorskip("stcal.skymatch.skyimage")
    region = pytest.importorskip("gwcs.region")

    def sky_image(w):
        return skyimage.SkyImage(
            image=np.zeros(shape, dtype=np.float32),
            mask=np.ones(shape, dtype=bool),
            wcs_fwd=lambda x, y, with_bounding_box=False: w.all_pix2world(x, y, 0),
            wcs_inv=lambda ra, dec, with_bounding_box=False: w.all_world2pix(ra, dec, 0),
            skystat=lambda d: (0.0, d.size),
            stepsize=stepsize,
        )

    a, b = sky_image(wa), sky_image(wb)
    inter = a.intersection(b)
    fill = np.zeros(shape, dtype=bool)
    for ra, dec in inter.to_radec():
        if len(ra) < 4:
            continue
        x, y = wa.all_world2pix(ra, dec, 0)
        fill = region.Polygon(True, list(zip(x, y, strict=True))).scan(fill)
    return fill, abs(inter.area())


@pytest.mark.parametrize(
    ("wa", "wb", "stepsize"),
    [
        (make_wcs(150.0, 2.0), make_wcs(150.0 + 0.9 * 200 * 20 / 3600, 2.0), None),
        (make_wcs(150.0, 2.0, rot=3.0), make_wcs(150.004, 2.003, rot=-4.0), None),
        (make_wcs(20.0, -70.0, rot=10.0), make_wcs(20.3, -69.8, rot=40.0), None),
        (make_wcs(20.0, -70.0, sip=2e-6), make_wcs(20.1, -70.05, rot=5.0, sip=2e-6), 25),
    ],
    ids=["tiles", "dither", "rotated", "sip"],
)
def test_overlap_pixels_close_to_the_reference_fill(wa, wb, stepsize):
    fa, fb = geo.footprints([wa, wb], [SHAPE, SHAPE], stepsize=stepsize)
    ov = geo.intersect(fa, fb)
    for w_img, w_other in ((wa, wb), (wb, wa)):
        ref, ref_area = reference_fill(w_img, w_other, SHAPE, stepsize)
        got = spans_to_mask(geo.overlap_spans(ov, w_img, SHAPE), SHAPE)
        assert ov.area == pytest.approx(ref_area, rel=1e-9)
        assert ref.sum() > 50
        # the reference rounds vertices to integers and fills up to one extra pixel
        # on the right: every difference is within one row / column of the other set
        grow = np.ones((3, 3), dtype=bool)
        assert not (got & ~binary_dilation(ref, grow)).any()
        assert not (ref & ~binary_dilation(got, grow)).any()


def test_group_overlap_is_a_union_of_member_overlaps():
    # image c overlaps both members of a group {a, b} that overlap each other
    wa = make_wcs(100.0, 0.0)
    wb = make_wcs(100.03, 0.0)
    wc = make_wcs(100.015, 0.02, rot=30.0)
    fa, fb, fc = geo.footprints([wa, wb, wc], [SHAPE] * 3)
    with_a, with_b = geo.intersect_many([fc], [[0, 0], [0, 1]], fps_b=[fa, fb])
    group = geo.Overlap(with_a.pieces + with_b.pieces, with_a.area + with_b.area)
    spans = geo.overlap_spans(group, wc, SHAPE)
    check_spans_format(spans, SHAPE)
    ra, rb, rc = (sky_footprint(w, SHAPE) for w in (wa, wb, wc))
    truth = truth_mask(wc, SHAPE, [rc, ra]) | truth_mask(wc, SHAPE, [rc, rb])
    np.testing.assert_array_equal(spans_to_mask(spans, SHAPE), truth)
    both = truth_mask(wc, SHAPE, [rc, ra]) & truth_mask(wc, SHAPE, [rc, rb])
    assert both.sum() > 100  # the members' overlaps really overlap: union != sum
    n_a = geo._npix(geo.overlap_spans(with_a, wc, SHAPE))
    n_b = geo._npix(geo.overlap_spans(with_b, wc, SHAPE))
    assert geo._npix(spans) == truth.sum() == n_a + n_b - both.sum()


def test_overlap_graph_table():
    rng = np.random.default_rng(3)
    ws = scene_tiles(rng)
    assert skyeq.overlap_graph is geo.overlap_graph and skyeq.footprints is geo.footprints
    t = skyeq.overlap_graph(ws, [SHAPE] * len(ws))
    assert t.colnames == ["i", "j", "area", "npix_i", "npix_j"]
    assert str(t["area"].unit) == "sr"
    # 3x3 tiles: 12 edge neighbours + 8 diagonal neighbours
    assert len(t) == 20
    assert np.all(t["i"] < t["j"])
    assert np.all(t["area"] > 0)
    fps = geo.footprints(ws, [SHAPE] * len(ws))
    for row in t[:5]:
        ov = geo.intersect(fps[row["i"]], fps[row["j"]])
        assert row["area"] == ov.area
        assert row["npix_i"] == geo._npix(geo.overlap_spans(ov, ws[row["i"]], SHAPE))
        assert row["npix_j"] == geo._npix(geo.overlap_spans(ov, ws[row["j"]], SHAPE))


def test_overlap_to_polygon_and_closed_rings():
    fa, fb = geo.footprints([make_wcs(5.0, 5.0), make_wcs(5.05, 5.02, rot=10)], [SHAPE] * 2)
    ov = geo.intersect(fa, fb)
    poly = ov.to_polygon()
    assert abs(poly.area()) == pytest.approx(ov.area, rel=1e-9)
    closed = [np.vstack((p, p[:1])) for p in ov.pieces]
    w = make_wcs(5.0, 5.0)
    np.testing.assert_array_equal(
        geo.overlap_spans(closed, w, SHAPE), geo.overlap_spans(ov, w, SHAPE)
    )
    assert geo.overlap_spans([], w, SHAPE).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\(m, 3\)"):
        geo.overlap_spans([np.zeros((4, 2))], w, SHAPE)


def test_spans_raise_naming_the_image_when_the_inverse_fails():
    w = make_wcs(5.0, 5.0)
    fa, fb = geo.footprints([w, make_wcs(5.05, 5.0)], [SHAPE] * 2)
    ov = geo.intersect(fa, fb)

    def fwd(x, y):
        return w.all_pix2world(x, y, 0)

    def inv(ra, dec):
        return np.full(np.shape(ra), np.nan), np.full(np.shape(ra), np.nan)

    ad = as_wcs_adapter((fwd, inv), name="broken.fits")
    with pytest.raises(ValueError, match=r"broken\.fits"):
        geo.overlap_spans(ov, ad, SHAPE)


def test_image_overlaps_per_image_and_per_group():
    rng = np.random.default_rng(3)
    ws = scene_tiles(rng)
    fps = geo.footprints(ws, [SHAPE] * len(ws))
    pairs, ovs = geo.find_overlaps(fps)
    per = geo.image_overlaps(pairs, ovs, len(fps))
    # no groups: every image sees each overlapping neighbour once, same overlap object data
    for (i, j), ov in zip(pairs, ovs, strict=True):
        assert per[i][j].area == ov.area
        assert per[j][i].area == ov.area
    assert sum(len(d) for d in per) == 2 * len(pairs)
    assert sorted(per[4]) == [0, 1, 2, 3, 5, 6, 7, 8]  # the centre tile
    # groups: rows of the 3x3 grid; centre tile (row 1) against row 0 = union of 3 tiles
    labels = np.repeat([0, 1, 2], 3)
    grp = geo.image_overlaps(pairs, ovs, len(fps), labels)
    assert sorted(grp[4]) == [0, 2]
    expect = sum(per[4][k].area for k in (0, 1, 2))
    assert grp[4][0].area == pytest.approx(expect, rel=1e-15)
    assert len(grp[4][0].pieces) == 3
    spans = geo.overlap_spans_many(list(grp[4].values()), ws[4], SHAPE)
    union = np.zeros(SHAPE, dtype=bool)
    for k in (0, 1, 2):
        union |= spans_to_mask(geo.overlap_spans(per[4][k], ws[4], SHAPE), SHAPE)
    np.testing.assert_array_equal(spans_to_mask(spans[0], SHAPE), union)
    with pytest.raises(ValueError, match="one entry per image"):
        geo.image_overlaps(pairs, ovs, len(fps), labels[:5])


def test_ring_area_is_exact_for_large_and_tiny_polygons():
    octant = np.eye(3)
    apex = np.ones(3) / np.sqrt(3)
    assert gk.ring_area(octant, apex) == pytest.approx(np.pi / 2, rel=1e-15)
    assert gk.ring_area(octant[::-1].copy(), apex) == pytest.approx(-np.pi / 2, rel=1e-15)
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    rng = np.random.default_rng(2)
    for size in (1e-2, 1e-4, 1e-6):
        c = xyz(rng.uniform(0, 360), rng.uniform(-80, 80))
        e1 = np.cross([0.0, 0.0, 1.0], c)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(c, e1)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
        ring = c + size * (np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2)
        ring /= np.linalg.norm(ring, axis=1)[:, None]
        got = gk.ring_area(np.ascontiguousarray(ring), c)
        # 40-digit reference with the same fan decomposition on the rounded vertices
        V = [[mp.mpf(float(x)) for x in p] for p in ring]
        C = [mp.mpf(float(x)) for x in c]

        def dot(a, b):
            return sum(x * y for x, y in zip(a, b, strict=True))

        def cross(a, b):
            return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]

        ref = mp.mpf(0)
        for i in range(len(V)):
            a, b = V[i], V[(i + 1) % len(V)]
            ref += 2 * mp.atan2(dot(C, cross(a, b)), 1 + dot(C, a) + dot(a, b) + dot(b, C))
        assert got == pytest.approx(float(ref), rel=1e-13)


def test_scan_survives_huge_coordinates():
    shape = (10, 12)
    big = 1e300
    for poly in (
        [(-big, -big), (big, -big), (big, big), (-big, big)],  # covers everything
        [(2, 2), (big, 3), (4, 6)],  # one far vertex
        [(big, big), (2 * big, big), (2 * big, 2 * big)],  # all far away
        [(-big, -big), (-big / 2, -big), (-big / 2, -big / 2)],
    ):
        spans, _ = scan([poly], shape)
        check_spans_format(spans, shape)
    spans, _ = scan([[(-big, -big), (big, -big), (big, big), (-big, big)]], shape)
    assert geo._npix(spans) == 120
    spans, _ = scan([[(big, big), (2 * big, big), (2 * big, 2 * big)]], shape)
    assert len(spans) == 0


def test_kernels_return_status_instead_of_raising():
    v = np.eye(3)  # a vertex exactly 90 degrees from the tangent point
    idx, off, status = gk.convex_parts(v, np.array([1.0, 0.0, 0.0]))
    assert status == 2 and len(idx) == 0 and off.tolist() == [0]
    both = np.ascontiguousarray(np.vstack((v, v)))
    args = (
        both,
        np.array([0, 3, 6]),
        np.array([0, 1, 2, 0, 1, 2]),
        np.array([0, 3, 6]),
        np.array([0, 1, 2]),
    )
    # NaN centre: no overlap, no exception
    out, _poff, pairoff, area, status = gk.intersect_pairs(
        *args, np.array([[np.nan] * 3, [1.0, 0, 0]]), np.ones(2), np.array([[0, 1]]), 0.3, 1e-11
    )
    assert len(out) == 0 and area.tolist() == [0.0] and status.tolist() == [0]
    # vertices beyond the gnomonic limit: sent to the fallback
    c = np.ones(3) / np.sqrt(3)
    out, _poff, pairoff, area, status = gk.intersect_pairs(
        *args, np.vstack((c, c)), np.ones(2), np.array([[0, 1]]), 0.9, 1e-11
    )
    assert status.tolist() == [1] and np.isnan(area[0]) and pairoff.tolist() == [0, 0]
