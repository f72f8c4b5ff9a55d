"""The body pipeline's library (image_io, body_maps, lazy_maps, paf_grouping, drawing): image
reading, resizing, peaks and the PAF grouping on synthetic maps."""
import itertools

import cv2
import numpy as np
import pytest

import body_maps
import cli
import drawing
import image_io
import lazy_maps
import paf_grouping
from entity import JointType as J, params

N = len(J)

# A standing person, 18 joints (x, y) for a height of about 1 (feet at y = 1).
TEMPLATE = {
    J.Nose: (0.0, 0.06), J.Neck: (0.0, 0.17),
    J.RShoulder: (-0.11, 0.18), J.RElbow: (-0.16, 0.33), J.RWrist: (-0.19, 0.47),
    J.LShoulder: (0.11, 0.18), J.LElbow: (0.16, 0.33), J.LWrist: (0.19, 0.47),
    J.RHip: (-0.07, 0.5), J.RKnee: (-0.08, 0.74), J.RAnkle: (-0.09, 0.97),
    J.LHip: (0.07, 0.5), J.LKnee: (0.08, 0.74), J.LAnkle: (0.09, 0.97),
    J.REye: (-0.025, 0.04), J.LEye: (0.025, 0.04), J.REar: (-0.055, 0.055),
    J.LEar: (0.055, 0.055),
}


def person(cx, top, height, missing=(), moved=None):
    """(18, 3) pose: x, y, 1 for present joints, 0, 0, 0 for ``missing`` ones."""
    pose = np.zeros((N, 3))
    for j, (x, y) in TEMPLATE.items():
        pose[j] = cx + x * height, top + y * height, 1
    for j, xy in (moved or {}).items():
        pose[j, :2] = xy
    for j in missing:
        pose[j] = 0
    return pose


def synthetic_maps(poses, shape, sigma=3.0, limb_width=3.0):
    """Ground-truth-like maps: a Gaussian peak per joint (max over people), a unit vector field
    along every limb with both joints present (averaged where limbs overlap)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    heat = np.zeros((N + 1, h, w))
    paf = np.zeros((len(params['limbs_point']), 2, h, w))
    count = np.zeros((len(params['limbs_point']), h, w))
    for pose in poses:
        for j in range(N):
            if pose[j, 2] > 0:
                g = np.exp(-((xx - pose[j, 0]) ** 2 + (yy - pose[j, 1]) ** 2) / (2 * sigma ** 2))
                heat[j] = np.maximum(heat[j], g)
        for i, (ja, jb) in enumerate(params['limbs_point']):
            if pose[ja, 2] == 0 or pose[jb, 2] == 0:
                continue
            a, b = pose[ja, :2], pose[jb, :2]
            d = b - a
            length = np.hypot(*d)
            u = d / length
            t = np.clip((xx - a[0]) * u[0] + (yy - a[1]) * u[1], 0, length)
            on = np.hypot(xx - a[0] - t * u[0], yy - a[1] - t * u[1]) <= limb_width
            paf[i, 0][on] += u[0]
            paf[i, 1][on] += u[1]
            count[i][on] += 1
    paf /= np.maximum(count, 1)[:, None]
    heat[N] = np.clip(1 - heat[:N].max(0), 0, 1)  # background channel
    return heat.astype(np.float32), paf.reshape(-1, h, w).astype(np.float32)


def assert_same_people(found, expected, tol=1.0):
    """Each expected person matched by exactly one found person: same joints present, every
    keypoint within ``tol`` pixels."""
    assert len(found) == len(expected), 'found %d people, expected %d' % (len(found), len(expected))
    unmatched = list(range(len(found)))
    for k, exp in enumerate(expected):
        present = exp[:, 2] > 0
        best = None
        for f in unmatched:
            got = found[f]
            if np.array_equal(got[:, 2] > 0, present):
                err = np.hypot(*(got[present, :2] - exp[present, :2]).T).max()
                if err <= tol:
                    best = f
                    break
        assert best is not None, 'expected person %d not recovered' % k
        unmatched.remove(best)
        assert np.all(found[best][~present] == 0)


def test_one_person_recovered_exactly():
    pose = person(160.3, 20.7, 200)
    heat, paf = synthetic_maps([pose], (240, 320))
    poses, scores = paf_grouping.group_people(heat, paf)
    assert poses.shape == (1, N, 3) and scores.shape == (1,)
    assert_same_people(poses, [pose])
    # the score column holds the peak heights (smoothed Gaussians: below 1, well above 0)
    assert np.all((poses[0, :, 2] > 0.3) & (poses[0, :, 2] <= 1))


def test_two_people_with_crossing_arms():
    a = person(120, 30, 200, moved={J.LElbow: (175.0, 95.0), J.LWrist: (232.0, 110.0)})
    b = person(250, 40, 190, moved={J.RElbow: (200.0, 75.0), J.RWrist: (150.0, 140.0)})
    heat, paf = synthetic_maps([a, b], (260, 380))
    poses, _ = paf_grouping.group_people(heat, paf)
    assert_same_people(poses, [a, b])


def test_six_people_with_crossings_and_missing_parts():
    people = [
        person(70, 20, 160),
        person(190, 30, 150, missing=[J.RKnee, J.RAnkle, J.LKnee, J.LAnkle]),  # legs cut off
        person(320, 25, 170, missing=[J.LEar, J.REar, J.LEye]),
        person(450, 20, 160, missing=[J.RWrist, J.RElbow]),
        # two people whose forearms cross each other between them
        person(130, 230, 150, moved={J.LWrist: (215.0, 300.0)}),
        person(260, 235, 150, moved={J.RWrist: (170.0, 290.0)}, missing=[J.Nose, J.REye]),
    ]
    heat, paf = synthetic_maps(people, (420, 540))
    poses, scores = paf_grouping.group_people(heat, paf)
    assert_same_people(poses, people)
    assert np.all(scores > 0)


def test_partial_person_and_nobody():
    # just a head and shoulders (5 joints) is a person; an empty map is nobody, not an error
    head = person(100, 40, 200, missing=[j for j in J if j not in
                                          (J.Nose, J.Neck, J.RShoulder, J.LShoulder, J.REye)])
    heat, paf = synthetic_maps([head], (200, 200))
    poses, _ = paf_grouping.group_people(heat, paf)
    assert_same_people(poses, [head])
    poses, scores = paf_grouping.group_people(np.zeros((19, 50, 60), np.float32),
                                           np.zeros((38, 50, 60), np.float32))
    assert poses.shape == (0, N, 3) and scores.shape == (0,)


def test_limb_without_paf_support_is_not_connected():
    # joints present but no PAF at all: peaks exist, yet nobody is assembled
    heat, paf = synthetic_maps([person(100, 20, 180)], (220, 200))
    poses, _ = paf_grouping.group_people(heat, np.zeros_like(paf))
    assert len(poses) == 0


def test_find_peaks_matches_brute_force():
    rng = np.random.RandomState(0)
    hm = cv2.GaussianBlur(rng.rand(3, 40, 50).astype(np.float32).transpose(1, 2, 0),
                          (7, 7), 2).transpose(2, 0, 1).copy()
    hm[1, 0, 0] = 2.0  # a corner peak: outside the map counts as 0
    hm[2, 20, 20:22] = 3.0  # a tie: the left pixel is the peak
    hm[2, 30:32, 40] = 3.0  # a tie: the upper pixel is the peak
    peaks = paf_grouping.find_peaks(hm, thresh=0.3)
    expected = []
    for c, y, x in itertools.product(range(3), range(40), range(50)):
        v = hm[c, y, x]
        nb = [hm[c, y + dy, x + dx] if 0 <= y + dy < 40 and 0 <= x + dx < 50 else 0
              for dy, dx in ((-1, 0), (0, -1), (1, 0), (0, 1))]
        if v > 0.3 and v > nb[0] and v > nb[1] and v >= nb[2] and v >= nb[3]:
            expected.append((c, x, y, v))
    assert len(expected) > 3
    assert (2, 20, 20, 3.0) in expected and (2, 40, 30, 3.0) in expected
    assert (2, 21, 20, 3.0) not in expected and (2, 40, 31, 3.0) not in expected
    np.testing.assert_allclose(peaks[:, :4], np.array(expected), rtol=1e-6)
    np.testing.assert_array_equal(peaks[:, 4], np.arange(len(expected)))


def test_find_peaks_keeps_only_the_strongest_per_part(monkeypatch):
    # noise with hundreds of local maxima (as untrained nets give): only the strongest
    # max_peaks_per_part survive, still in row-major order, ids renumbered
    rng = np.random.RandomState(3)
    hm = rng.rand(2, 60, 60).astype(np.float32)
    monkeypatch.setitem(params, 'max_peaks_per_part', 10 ** 6)
    full = paf_grouping.find_peaks(hm, thresh=0.05)
    monkeypatch.setitem(params, 'max_peaks_per_part', 20)
    capped = paf_grouping.find_peaks(hm, thresh=0.05)
    for c in range(2):
        all_c = full[full[:, 0] == c]
        got = capped[capped[:, 0] == c]
        assert len(all_c) > 200 and len(got) == 20
        strongest = all_c[np.sort(np.argsort(-all_c[:, 3], kind='stable')[:20])]
        np.testing.assert_array_equal(got[:, 1:4], strongest[:, 1:4])
    np.testing.assert_array_equal(capped[:, 4], np.arange(40))


def test_lazy_samples_both_ways_equal_dense():
    """``LazyMaps.sample`` takes small blocks of the maps for few samples and the maps
    upsampled along x for many: both give the dense values, at one and three scales, with
    and without a second resize (wider interpolation bands)."""
    rng = np.random.RandomState(5)
    for out_hw, scales in (((96, 136), [(12, 17, (96, 136))]),
                           ((70, 101), [(12, 17, (90, 130)), (6, 9, (45, 65))])):
        lazy = lazy_maps.LazyMaps(out_hw)
        for mh, mw, valid in scales:
            lazy.add(rng.randn(38, mh, mw).astype(np.float32), 8, valid)
        dense = lazy.dense()
        for n in (5, 4000):  # few samples: blocks; many: columns
            c = rng.randint(0, 38, n)
            ys, xs = rng.randint(0, out_hw[0], n), rng.randint(0, out_hw[1], n)
            np.testing.assert_allclose(lazy.sample(c, ys, xs), dense[c, ys, xs], atol=1e-5)


def test_pairs_are_scored_in_bounded_chunks(monkeypatch):
    """Noisy maps give ~300k candidate pairs: scored chunk by chunk (bounded memory), with
    the same scores and validity as all at once, on dense and on lazy PAFs."""
    rng = np.random.RandomState(4)
    maps = rng.randn(38, 12, 17).astype(np.float32)
    lazy = lazy_maps.LazyMaps((90, 130))
    lazy.add(maps, 8, (90, 130))
    dense = lazy.dense()
    limb = rng.randint(0, 19, 50)
    a, b = rng.rand(50, 2) * [129, 89], rng.rand(50, 2) * [129, 89]
    for pafs in (dense, lazy):
        whole = paf_grouping.score_pairs(pafs, limb, a, b, 130)
        monkeypatch.setattr(paf_grouping, 'SCORE_PAIRS_CHUNK', 7)
        chunked = paf_grouping.score_pairs(pafs, limb, a, b, 130)
        monkeypatch.undo()
        np.testing.assert_allclose(chunked[0], whole[0], atol=1e-6)  # (lazy: either way of
        np.testing.assert_array_equal(chunked[1], whole[1])          # sampling, by size)
    np.testing.assert_allclose(paf_grouping.score_pairs(lazy, limb, a, b, 130)[0],
                               paf_grouping.score_pairs(dense, limb, a, b, 130)[0], atol=1e-5)
    empty = lazy_maps.LazyMaps((90, 130))
    empty.add(np.zeros((0, 12, 17), np.float32), 8, (90, 130))
    assert paf_grouping.find_peaks(empty).shape == (0, 5)


def test_limb_scores_match_a_per_pair_loop():
    rng = np.random.RandomState(1)
    px, py = rng.randn(2, 60, 80).astype(np.float32)
    a = rng.rand(4, 2) * [79, 59]
    b = rng.rand(5, 2) * [79, 59]
    b[0] = a[0]  # zero-length pair is never valid
    # every (a, b) pair, a-major, on one limb whose two PAF maps are px, py
    score, valid = paf_grouping.score_pairs(np.stack([px, py]), np.zeros(20, np.intp),
                                         np.repeat(a, 5, axis=0), np.tile(b, (4, 1)), 30)
    score, valid = score.reshape(4, 5), valid.reshape(4, 5)
    n = params['n_integ_points']
    for i, j in itertools.product(range(4), range(5)):
        v = b[j] - a[i]
        length = np.hypot(*v)
        if length == 0:
            assert not valid[i, j]
            continue
        proj = []
        for k in range(n):
            x, y = a[i] + v * k / (n - 1)
            x, y = int(np.round(x)), int(np.round(y))
            proj.append((px[y, x] * v[0] + py[y, x] * v[1]) / length)
        s = np.mean(proj) + min(params['limb_length_ratio'] * 30 / length
                                - params['length_penalty_value'], 0)
        n_good = sum(p > params['inner_product_thresh'] for p in proj)
        ok = n_good >= params['n_integ_points_thresh']
        assert score[i, j] == pytest.approx(s, abs=1e-5)
        assert valid[i, j] == (ok and s > 0)


def test_greedy_matching_is_one_to_one_best_first(monkeypatch):
    # two candidate necks, two candidate noses; all four pairs score > 0
    peaks = np.array([[J.Neck, 10, 50, 1, 0], [J.Neck, 60, 50, 1, 1],
                      [J.Nose, 12, 20, 1, 2], [J.Nose, 58, 20, 1, 3]], np.float64)
    paf = np.zeros((38, 80, 80), np.float32)
    limb = [list(l) for l in params['limbs_point']].index([J.Neck, J.Nose])
    paf[2 * limb + 1] = -1.0  # every vector points up: all pairs valid
    conns = paf_grouping.compute_connections(paf, peaks, img_len=80)[limb]
    assert len(conns) == 2
    assert {(int(a), int(b)) for a, b, _ in conns} == {(0, 2), (1, 3)}  # the straighter pairs


def test_upsample_maps_equals_two_cv2_resizes():
    rng = np.random.RandomState(2)
    maps = rng.rand(5, 12, 17).astype(np.float32)
    got = lazy_maps.upsample_maps(maps, 8, (90, 130), (70, 101))
    ref = []
    for m in maps:
        up = cv2.resize(m, (17 * 8, 12 * 8), interpolation=cv2.INTER_CUBIC)[:90, :130]
        ref.append(cv2.resize(up, (101, 70), interpolation=cv2.INTER_CUBIC))
    np.testing.assert_allclose(got, np.array(ref), atol=2e-5)
    # with the Gaussian folded in: the same as smooth_heatmaps (cv2.GaussianBlur) afterwards
    smoothed = lazy_maps.upsample_maps(maps, 8, (90, 130), (70, 101), smooth=True)
    np.testing.assert_allclose(smoothed, paf_grouping.smooth_heatmaps(np.array(ref)), atol=2e-5)


def test_compute_maps_scales_and_lazy_maps():
    """A fake net whose maps are smooth functions of the input position: the multi-scale
    average, the padding crop, the lazily sampled PAFs and the lazy heatmap rows must agree
    with dense upsampling, and the lazy row bounds must bound the dense rows."""
    seen = []

    def forward(x):
        seen.append(x.shape)
        _, _, h, w = x.shape
        yy, xx = np.mgrid[0:h // 8, 0:w // 8].astype(np.float32)
        heat = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 7) for c in range(19)])
        paf = np.stack([np.cos(xx / 6 - c) + yy / 40 for c in range(38)])
        return paf[None], heat[None]

    img = np.zeros((50, 70, 3), np.uint8)
    heat, paf, scale = body_maps.compute_maps(img, forward, 'mobilenet', [0.5, 1])
    assert seen == [(1, 3, 192, 272), (1, 3, 368, 528)]  # 184x258 / 368x515 padded to 16
    assert heat.shape == (19, 50, 70) and paf.shape == (38, 50, 70) and scale == (1.0, 1.0)
    lazy_heat, lazy, _ = body_maps.compute_maps(img, forward, 'mobilenet', [0.5, 1], lazy=True)
    np.testing.assert_allclose(lazy.dense(), paf, atol=1e-5)
    np.testing.assert_allclose(lazy_heat.dense(), heat, atol=1e-5)
    np.testing.assert_allclose(lazy_heat.rows(5, 7, 20), heat[5, 7:20], atol=1e-5)
    stacked = lazy_heat.stacked_rows([5, 2], [7, 0], [20, 3], [1, 15], 19)
    np.testing.assert_allclose(stacked[1:14], heat[5, 7:20], atol=1e-5)
    np.testing.assert_allclose(stacked[15:18], heat[2, 0:3], atol=1e-5)
    assert not stacked[[0, 14, 18]].any()
    np.testing.assert_allclose(lazy_heat.stacked_rows([4], [3], [9], [0], 6, 20, 31),
                               heat[4, 3:9, 20:31], atol=1e-5)
    rows, cols = lazy_heat.bounds()
    assert rows.shape == (19, 50) and (rows >= np.abs(heat).max(axis=2)).all()
    assert cols.shape == (19, 70) and (cols >= np.abs(heat).max(axis=1)).all()
    assert (rows <= np.abs(heat).max(axis=2) + 1).all()  # bounds, but not useless ones
    assert (cols <= np.abs(heat).max(axis=1) + 1).all()
    lazy_peaks, peaks = paf_grouping.find_peaks(lazy_heat, 0.05), paf_grouping.find_peaks(heat, 0.05)
    assert len(peaks) > 19  # several per map: several row runs per map
    np.testing.assert_array_equal(lazy_peaks[:, [0, 1, 2, 4]], peaks[:, [0, 1, 2, 4]])
    np.testing.assert_allclose(lazy_peaks[:, 3], peaks[:, 3], atol=1e-5)
    ys, xs = np.array([[0, 49], [13, 27]]), np.array([[0, 69], [55, 3]])
    for c in (0, 17, 37):
        np.testing.assert_allclose(lazy.sample(c, ys, xs), paf[c][ys, xs], atol=1e-5)
    cs = np.array([[3, 36], [0, 12]])  # a channel per sample
    np.testing.assert_allclose(lazy.sample(cs, ys, xs), paf[cs, ys, xs], atol=1e-5)
    raw, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', [0.5, 1], smooth=False)
    np.testing.assert_allclose(heat, paf_grouping.smooth_heatmaps(raw), atol=1e-5)


@pytest.mark.parametrize('where, stack_pixels', [('edges', None), ('middle', None),
                                                  ('edges', 64)])
def test_lazy_peaks_equal_dense_peaks_for_small_blobs(monkeypatch, where, stack_pixels):
    """Lazy heatmaps compute only the runs of rows (and the range of columns) that can hold
    peaks: blobs at the map's corners and edges, two far apart in one map, one per map
    elsewhere, and empty maps give the same peaks as the dense maps."""
    def forward(x):
        _, _, h, w = x.shape
        yy, xx = np.mgrid[0:h // 8, 0:w // 8].astype(np.float32)
        heat = np.zeros((19, h // 8, w // 8), np.float32)
        if where == 'edges':
            blobs = {0: [(0, 0)], 1: [(h // 8 - 1, w // 8 - 1)], 2: [(3, w // 8 - 1), (20, 2)],
                     5: [(10, 30)], 9: [(h // 8 - 1, 0)], 13: [(15, 15), (16, 40)]}
        else:  # a few columns in the middle: a narrow column range
            blobs = {0: [(5, 20)], 4: [(10, 24), (30, 21)], 7: [(0, 22)], 17: [(h // 8 - 1, 23)]}
        for c, centres in blobs.items():
            for cy, cx in centres:
                heat[c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
        paf = np.zeros((38, h // 8, w // 8), np.float32)
        return paf[None], heat[None]

    img = np.zeros((300, 470, 3), np.uint8)
    for scales in ([1], [0.5, 1, 1.5]):
        dense, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', scales)
        lazy, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', scales, lazy=True)
        want = paf_grouping.find_peaks(dense[:18])
        if stack_pixels:  # one stacked image per run of rows (bounded memory on huge maps)
            monkeypatch.setattr(paf_grouping, 'PEAK_STACK_PIXELS', stack_pixels)
            np.testing.assert_array_equal(paf_grouping.find_peaks(dense[:18]), want)
        got = paf_grouping.find_peaks(lazy.select(18))
        monkeypatch.undo()
        assert len(want) >= 5
        np.testing.assert_array_equal(got[:, [0, 1, 2, 4]], want[:, [0, 1, 2, 4]])
        np.testing.assert_allclose(got[:, 3], want[:, 3], atol=1e-5)
        rows, cols = lazy.select(18).bounds()
        assert (rows[3] <= 0.1).all() and (cols[3] <= 0.1).all()  # empty maps are skipped


@pytest.mark.parametrize('scales, stack_pixels', [([1], None), ([0.5, 1, 1.5], None),
                                                   ([1], 64)])
def test_lazy_peaks_equal_dense_peaks_for_faint_noisy_maps(monkeypatch, scales, stack_pixels):
    """Maps of smooth noise with many faint maxima around the default threshold (several
    runs of columns per run of rows, blocks of many widths, negative values): the lazy peak
    search finds exactly the dense maps' peaks."""
    rng = np.random.RandomState(7)
    noise = {}

    def forward(x):
        _, _, h, w = x.shape
        if (h, w) not in noise:
            raw = rng.randn(19, h // 8, w // 8).astype(np.float32)
            noise[h, w] = np.stack([cv2.GaussianBlur(m, (0, 0), 1.5) for m in raw]) * 0.12
        return np.zeros((1, 38, h // 8, w // 8), np.float32), noise[h, w][None]

    img = np.zeros((300, 470, 3), np.uint8)
    dense, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', scales)
    lazy, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', scales, lazy=True)
    want = paf_grouping.find_peaks(dense[:18])
    assert params['heatmap_peak_thresh'] == 0.02 and len(want) > 100
    assert (dense[:18] > 0.02).mean() < 0.5  # faint: many maps hold few values above
    if stack_pixels:
        monkeypatch.setattr(paf_grouping, 'PEAK_STACK_PIXELS', stack_pixels)
        np.testing.assert_array_equal(paf_grouping.find_peaks(dense[:18]), want)
    got = paf_grouping.find_peaks(lazy.select(18))
    np.testing.assert_array_equal(got[:, [0, 1, 2, 4]], want[:, [0, 1, 2, 4]])
    np.testing.assert_allclose(got[:, 3], want[:, 3], atol=1e-5)


def test_sizes_and_padding():
    assert body_maps.fit_size(425, 640, 368) == (368, 554)
    assert body_maps.fit_size(1, 1, 368) == (368, 368)
    assert body_maps.fit_size(1, 10000, 368) == (1, 1472)  # long side capped, no 3.7M strip
    padded, pad = body_maps.pad_to_multiple(np.zeros((368, 554, 3), np.uint8), 16, 128)
    assert padded.shape == (368, 560, 3) and pad == (0, 6) and padded[0, -1, 0] == 128
    assert body_maps.work_size(425, 640, [0.5, 1, 1.5, 2]) == (425, 640)
    assert body_maps.work_size(10000, 10000, [0.5, 1, 1.5, 2]) == (736, 736)


def test_preprocess_per_arch():
    img = np.full((2, 3, 3), 200, np.uint8)
    assert body_maps.preprocess(img, 'posenet').shape == (1, 3, 2, 3)
    np.testing.assert_allclose(body_maps.preprocess(img, 'posenet'), 200 / 256 - 0.5)
    np.testing.assert_allclose(body_maps.preprocess(img, 'mobilenet'), 200.0)
    # channels in NCHW order, from any memory layout (flipped views, strided crops)
    rng = np.random.RandomState(3)
    img = rng.randint(0, 256, (7, 9, 3)).astype(np.uint8)
    for view in (img, img[:, ::-1], img[::2, 1::3], img[..., ::-1]):
        want = view.astype(np.float32).transpose(2, 0, 1)[None] / 256 - 0.5
        np.testing.assert_array_equal(body_maps.preprocess(view, 'posenet'), want)
    for bad in (np.zeros((4, 5), np.uint8), np.zeros((4, 5, 1), np.uint8),
                np.zeros((4, 5, 4), np.uint8)):
        with pytest.raises(ValueError, match=r'BGR image of shape \(H, W, 3\)'):
            body_maps.preprocess(bad, 'mobilenet')


def test_training_batches_are_normalised_bit_for_bit_as_inference():
    """train_coco_pose_estimation's batches go through the same to_net_input: each image of a
    batch equals the one-image path, and both equal NumPy's cast, transpose, / 256 - 0.5."""
    rng = np.random.RandomState(5)
    for shape in ((4, 46, 46, 3), (1, 368, 368, 3), (3, 17, 29, 3)):
        imgs = rng.randint(0, 256, shape).astype(np.uint8)
        for norm in ('caffe', 'raw'):
            batch = body_maps.to_net_input(imgs, norm)
            want = imgs.astype(np.float32).transpose(0, 3, 1, 2)
            want = want / np.float32(256) - np.float32(0.5) if norm == 'caffe' else want
            assert batch.dtype == np.float32 and batch.shape == want.shape
            np.testing.assert_array_equal(batch, want)
            for n in range(len(imgs)):
                np.testing.assert_array_equal(body_maps.to_net_input(imgs[n], norm), batch[n:n + 1])
    assert body_maps.to_net_input(imgs, 'raw').max() == imgs.max()  # raw keeps 0..255
    with pytest.raises(ValueError, match='unknown normalisation'):
        body_maps.to_net_input(imgs, 'imagenet')
    with pytest.raises(ValueError, match=r'BGR image of shape \(H, W, 3\)'):
        body_maps.to_net_input(np.zeros((2, 4, 5, 4), np.uint8), 'raw')


def test_to_image_coords_keeps_missing_joints_zero():
    poses = np.array([[[9.5, 4.5, 0.8], [0, 0, 0]]])
    out = body_maps.to_image_coords(poses, (2.0, 4.0))
    np.testing.assert_allclose(out, [[[39.5, 9.5, 0.8], [0, 0, 0]]])


# ----------------------------------------------------------------------------- read_image

def test_read_image_variants(tmp_path):
    bgr = np.random.RandomState(3).randint(0, 256, (7, 9, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'c.png'), bgr)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / 'c.png'), bgr)

    cv2.imwrite(str(tmp_path / 'g.png'), bgr[:, :, 0])
    g = image_io.read_image(tmp_path / 'g.png')
    assert g.shape == (7, 9, 3) and g.dtype == np.uint8
    assert np.all(g == bgr[:, :, :1])

    bgra = np.dstack([bgr, np.full((7, 9), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / 'a.png'), bgra)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / 'a.png'), bgr)

    cv2.imwrite(str(tmp_path / 'd.png'), bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / 'd.png'), bgr)

    cv2.imwrite(str(tmp_path / 'one.png'), bgr[:1, :1])
    assert image_io.read_image(tmp_path / 'one.png').shape == (1, 1, 3)


@pytest.mark.parametrize('kind, message', [
    ('missing', 'no such file'), ('empty', 'empty file'), ('text', 'not an image'),
    ('dir', 'directory')])
def test_read_image_errors_name_the_file(tmp_path, kind, message):
    path = tmp_path / ('bad_' + kind + '.png')
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'text':
        path.write_text('hello, I am not a picture\n')
    elif kind == 'dir':
        path.mkdir()
    with pytest.raises(cli.UserError) as e:
        image_io.read_image(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert '\n' not in str(e.value)


def test_draw_person_pose_draws_only_present_joints():
    img = np.zeros((100, 120, 3), np.uint8)
    assert np.array_equal(drawing.draw_person_pose(img, np.zeros((0, N, 3))), img)
    pose = person(60, 5, 90, missing=[J.RWrist])
    out = drawing.draw_person_pose(img, pose[None])
    assert out.shape == img.shape and not np.shares_memory(out, img) and img.max() == 0
    x, y = np.round(pose[J.LWrist, :2]).astype(int)
    assert out[y, x].max() > 100  # a joint dot
    assert out[:, :3].max() == 0  # nothing far from the person


# ----------------------------------------------------------------------------- accuracy steps
# (flip averaging, close-peak merging, sub-pixel peaks, person scores, OKS NMS)

FLIP_JOINT = np.arange(N)
for _a, _b in params['flip_joint_pairs']:
    FLIP_JOINT[_a], FLIP_JOINT[_b] = _b, _a


def mirrored(pose, width):
    """The pose a perfect net reports for the mirrored picture (``width`` pixels wide): every
    joint at x -> width - 1 - x, and left and right exchanged (a mirrored right arm looks
    like a left arm)."""
    out = np.zeros_like(pose)
    out[FLIP_JOINT] = pose
    out[:, 0] = np.where(out[:, 2] > 0, width - 1 - out[:, 0], 0)
    return out


def test_flip_permutations_pair_every_joint_and_limb_with_its_mirror():
    joints, limbs = body_maps.flip_permutations()
    np.testing.assert_array_equal(joints, FLIP_JOINT)
    np.testing.assert_array_equal(limbs[limbs], np.arange(len(limbs)))  # an involution
    for i, (a, b) in enumerate(params['limbs_point']):
        assert tuple(params['limbs_point'][limbs[i]]) == (FLIP_JOINT[a], FLIP_JOINT[b])
    neck_nose = [list(l) for l in params['limbs_point']].index([J.Neck, J.Nose])
    assert limbs[neck_nose] == neck_nose


def test_unmirror_maps_turns_a_mirrored_persons_maps_into_the_persons():
    # a person turned sideways (asymmetric), as a perfect net sees it and its mirror image
    pose = person(30.3, 4.2, 36, moved={J.LWrist: (41.0, 12.5), J.RKnee: (21.0, 29.0)},
                  missing=[J.LEar])
    heat, paf = synthetic_maps([pose], (44, 57), sigma=1.5, limb_width=1.2)
    heat_m, paf_m = synthetic_maps([mirrored(pose, 57)], (44, 57), sigma=1.5, limb_width=1.2)
    h, p = body_maps.unmirror_maps(heat_m, paf_m)
    np.testing.assert_allclose(h, heat, atol=1e-6)
    np.testing.assert_allclose(p, paf, atol=1e-6)
    assert np.abs(paf[0::2]).max() > 0.9  # the x components are there to be negated


def test_flip_averaging_of_a_symmetric_person_gives_the_maps_without_flip():
    """A person symmetric about the picture's middle looks the same mirrored, so a net gives
    the same maps for both inputs: flip averaging must give back the maps without flip
    (it fails if the left/right channels are not swapped or the PAFs' x not negated)."""
    pose = person(26.5, 3.0, 40)  # net-resolution coordinates, centred on 54 columns
    shapes = []

    def forward(x):
        shapes.append(x.shape)
        heat, paf = synthetic_maps([pose], (46, 54), sigma=1.2, limb_width=1.0)
        return paf[None], heat[None]

    img = np.zeros((368, 432, 3), np.uint8)  # no padding at scale 1
    for lazy in (False, True):
        plain = body_maps.compute_maps(img, forward, 'mobilenet', [1], lazy=lazy, flip=False)
        avg = body_maps.compute_maps(img, forward, 'mobilenet', [1], lazy=lazy, flip=True)
        for a, b in zip(plain[:2], avg[:2]):
            a, b = (m.dense() if lazy else m for m in (a, b))
            assert np.abs(a).max() > 0.5
            np.testing.assert_allclose(b, a, atol=1e-5)
    assert shapes == [(1, 3, 368, 432)] * 6  # without flip 1, with flip 2 forwards


def test_flip_averaging_with_padding_matches_a_perfect_net():
    """An asymmetric person in a picture that needs padding, at two scales.  The fake net
    is perfect: it finds the person in its input, mirrored or not, and renders the maps a
    net trained on COCO would (left and right by appearance).  Averaging must then give
    the maps without flip: the mirrored input's padding (now on the left) must not shift
    anything."""
    rng = np.random.RandomState(7)
    img = rng.randint(0, 255, (300, 470, 3)).astype(np.uint8)
    pose = person(300.0, 40.0, 220, moved={J.RWrist: (230.0, 150.0), J.LKnee: (340.0, 200.0)})
    inputs = {}
    for scale in (1, 0.5):
        rh, rw = body_maps.fit_size(300, 470, 368 * scale)
        resized = body_maps.resize(img, (rh, rw))
        padded, _ = body_maps.pad_to_multiple(resized, 16, 0)
        # (mirroring before padding would be a mistake: the maps would not line up)
        mirrored_first, _ = body_maps.pad_to_multiple(resized[:, ::-1].copy(), 16, 0)
        inputs[padded.shape[:2]] = [body_maps.preprocess(im, 'mobilenet')
                                    for im in (padded, mirrored_first)] + [rw / 470.0, rw]
    seen = []

    def forward(x):
        direct, mirrored_first, f, width = inputs[x.shape[2:]]
        p = pose.copy()
        p[:, :2] = (p[:, :2] + 0.5) * f - 0.5  # in the net's input
        if np.array_equal(x, direct):
            seen.append('direct')
        elif np.array_equal(x, direct[..., ::-1]):
            seen.append('mirrored')
            p = mirrored(p, x.shape[3])
        else:
            assert np.array_equal(x, mirrored_first)
            seen.append('mirrored before padding')
            p = mirrored(p, width)
        p[:, :2] = (p[:, :2] - 3.5) / 8  # output pixel j stands for input 8 j + 3.5
        heat, paf = synthetic_maps([p], (x.shape[2] // 8, x.shape[3] // 8), sigma=1.3,
                                   limb_width=1.0)
        return paf[None], heat[None]

    for lazy in (False, True):
        plain = body_maps.compute_maps(img, forward, 'mobilenet', [1, 0.5], lazy=lazy)
        avg = body_maps.compute_maps(img, forward, 'mobilenet', [1, 0.5], lazy=lazy, flip=True)
        for a, b in zip(plain[:2], avg[:2]):
            a, b = (m.dense() if lazy else m for m in (a, b))
            np.testing.assert_allclose(b, a, atol=2e-5)
    assert seen.count('mirrored') == 4 and seen.count('direct') == 8
    poses, _ = paf_grouping.group_people(*avg[:2], smooth=False)
    assert_same_people(poses, [pose], tol=3.0)


@pytest.mark.parametrize('sigma', [1.5, 3.0, 6.0])
def test_refine_peaks_recovers_a_gaussians_centre(sigma):
    rng = np.random.RandomState(int(sigma * 10))
    centres = rng.rand(N, 2) * [100, 70] + [20, 15]
    yy, xx = np.mgrid[0:100, 0:130]
    heat = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
                     for cx, cy in centres]).astype(np.float32)
    peaks = paf_grouping.find_peaks(heat)
    assert len(peaks) == N
    err_pixel = np.abs(peaks[:, 1:3] - centres).max()
    refined = paf_grouping.refine_peaks(heat, peaks, 'quadratic')
    assert np.abs(refined[:, 1:3] - centres).max() < 0.1 < err_pixel
    np.testing.assert_array_equal(refined[:, [0, 3, 4]], peaks[:, [0, 3, 4]])
    np.testing.assert_array_equal(paf_grouping.refine_peaks(heat, peaks, None), peaks)


def test_refine_peaks_on_lazy_maps_and_at_the_border():
    """Through the real upsampling (a fake net's Gaussians at net resolution, cubic
    upsampling, smoothing): lazy maps give the dense maps' refinement, far closer to the true
    centres than the pixels (cv2's cubic upsampling itself moves a sampled Gaussian's
    maximum by up to ~0.2 px); a peak on the map's border stays on its pixel along that
    axis."""
    rng = np.random.RandomState(2)
    centres = rng.rand(N, 2) * [40, 30] + [6, 6]  # net resolution, 54 x 46

    def forward(x):
        yy, xx = np.mgrid[0:46, 0:54]
        heat = np.zeros((19, 46, 54), np.float32)
        for j, (cx, cy) in enumerate(centres):
            heat[j] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0)
        heat[0, 20, 0] = 5.0  # a spike on the left border: a peak at x = 0
        return np.zeros((1, 38, 46, 54), np.float32), heat[None]

    img = np.zeros((368, 432, 3), np.uint8)
    dense, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', [1])
    lazy, _, _ = body_maps.compute_maps(img, forward, 'mobilenet', [1], lazy=True)
    peaks = paf_grouping.find_peaks(dense[:N])
    got = paf_grouping.refine_peaks(lazy.select(N), peaks, 'quadratic')
    np.testing.assert_allclose(got, paf_grouping.refine_peaks(dense[:N], peaks, 'quadratic'),
                               atol=1e-3)
    inner = ~((peaks[:, 0] == 0) & (peaks[:, 1] == 0))
    assert inner.sum() == N
    true = centres[peaks[inner, 0].astype(int)] * 8 + 3.5  # output j: input 8 j + 3.5
    err_pixel = np.abs(peaks[inner, 1:3] - true)
    err = np.abs(got[inner, 1:3] - true)
    assert err.max() < 0.2 and err.mean() < 0.1 < 0.2 < err_pixel.mean()
    border = got[~inner]
    assert len(border) == 1 and border[0, 1] == 0 and border[0, 2] % 1 != 0


def test_suppress_close_peaks_keeps_the_highest_of_each_cluster():
    peaks = np.array([[J.RShoulder, 50, 40, 0.50, 0],
                      [J.RShoulder, 51, 41, 0.52, 1],    # 1.4 px away, higher: kept
                      [J.RShoulder, 58, 40, 0.30, 2],    # 7 px from the kept one
                      [J.RElbow, 51, 41, 0.20, 3],       # another joint: kept
                      [J.RElbow, 54, 41, 0.20, 4],       # a tie within 3 px: the first wins
                      [J.RElbow, 30, 30, 0.01, 5]])
    got = paf_grouping.suppress_close_peaks(peaks, radius=5)
    np.testing.assert_array_equal(got[:, :4], peaks[[1, 2, 3, 5], :4])
    np.testing.assert_array_equal(got[:, 4], np.arange(4))
    np.testing.assert_array_equal(paf_grouping.suppress_close_peaks(peaks, radius=0), peaks)
    assert len(paf_grouping.suppress_close_peaks(peaks, radius=8)) == 3


def test_close_twin_peaks_no_longer_split_a_person(monkeypatch):
    """Maps averaged over scales or flips can give one joint two maxima a pixel or two
    apart.  When one limb's PAF prefers one and the next limb's the other, the per-limb
    matching splits the arm off the person; merging the twins keeps it whole."""
    pose = person(100, 20, 200)
    twin = pose.copy()
    twin[J.RShoulder, :2] += (-1.0, 2.0)
    heat, _ = synthetic_maps([pose], (240, 200), sigma=1.0)
    heat_twin, _ = synthetic_maps([twin], (240, 200), sigma=1.0)
    heat[J.RShoulder] = np.maximum(heat[J.RShoulder], 0.99 * heat_twin[J.RShoulder])
    # neck -> shoulder drawn to the first shoulder, shoulder -> elbow from the twin
    _, paf = synthetic_maps([pose], (240, 200), limb_width=2.0)
    _, paf_twin = synthetic_maps([twin], (240, 200), limb_width=2.0)
    upper_arm = [list(l) for l in params['limbs_point']].index([J.RShoulder, J.RElbow])
    paf[2 * upper_arm:2 * upper_arm + 2] = paf_twin[2 * upper_arm:2 * upper_arm + 2]
    assert (paf_grouping.find_peaks(heat)[:, 0] == J.RShoulder).sum() == 2
    monkeypatch.setitem(params, 'peak_nms_radius', 0)
    split, _ = paf_grouping.group_people(heat, paf, smooth=False)
    assert len(split) == 2  # the right arm is a person of its own
    monkeypatch.setitem(params, 'peak_nms_radius', 5)
    whole, _ = paf_grouping.group_people(heat, paf, smooth=False)
    assert_same_people(whole, [pose], tol=2.5)


def test_person_scores_and_limb_columns():
    # without ears, the limbs between a person's joints form a tree: all of them are its own
    # (with ears, a shoulder -> ear and an eye -> ear limb compete for the ear)
    people_in = [person(80, 20, 180, missing=[J.LEar, J.REar]),
                 person(250, 30, 170, missing=[J.LKnee, J.LAnkle, J.RKnee, J.RAnkle, J.LEar,
                                               J.REar])]
    heat, paf = synthetic_maps(people_in, (230, 340))
    heat = paf_grouping.smooth_heatmaps(heat[:N])
    peaks = paf_grouping.joint_peaks(heat)
    conns = paf_grouping.compute_connections(paf, peaks, 340)
    people = paf_grouping.assemble_people(conns, peaks)
    assert len(people) == 2
    pairs = {(int(a), int(b)): s for c in conns for a, b, s in c}
    coco = params['coco_joint_indices']
    for p in people:
        ids = p[:N].astype(int)
        mine = [pairs[(ids[a], ids[b])] for a, b in params['limbs_point']
                if ids[a] >= 0 and ids[b] >= 0]
        assert p[paf_grouping.N_LIMBS] == len(mine) == p[paf_grouping.N_FOUND] - 1  # a tree
        assert p[paf_grouping.LIMB_SUM] == pytest.approx(sum(mine))
        found = ids >= 0
        assert p[paf_grouping.TOTAL] == pytest.approx(peaks[ids[found], 3].sum() + sum(mine))
        kp = [peaks[ids[j], 3] if ids[j] >= 0 else 0.0 for j in coco]
        expected = sum(kp) / 17.0 * sum(mine) / len(mine)
        assert paf_grouping.person_scores(p[None], peaks, 'coco17')[0] == pytest.approx(expected)
    np.testing.assert_array_equal(paf_grouping.person_scores(people, peaks, 'total'),
                                  people[:, paf_grouping.TOTAL])
    scores = paf_grouping.person_scores(people, peaks, 'coco17')
    complete = np.argmax(people[:, paf_grouping.N_FOUND])
    assert scores[complete] == scores.max()  # same per-joint quality: the whole person first
    with pytest.raises(ValueError, match='person_score'):
        paf_grouping.person_scores(people, peaks, 'best')


def test_oks_nms_drops_duplicates_only():
    a = person(100, 20, 200)
    b = person(300, 20, 200)                       # someone else
    dup = a.copy()
    dup[:, :2] += 1.5                              # the same person, 1.5 px off
    part = np.zeros_like(a)
    part[[J.RShoulder, J.RElbow, J.RWrist]] = a[[J.RShoulder, J.RElbow, J.RWrist]] + [2, 1, 0]
    legs = np.zeros_like(a)                        # a fragment of a's own joints' kind but
    legs[[J.RKnee, J.RAnkle]] = a[[J.RKnee, J.RAnkle]] + [40, 0, 0]  # far from a's: kept
    poses = np.stack([dup, a, b, part, legs])
    scores = np.array([0.5, 0.9, 0.7, 0.2, 0.1])
    np.testing.assert_array_equal(paf_grouping.oks_nms(poses, scores, 0.5), [1, 2, 4])
    np.testing.assert_array_equal(paf_grouping.oks_nms(poses, scores, None), [1, 2, 0, 3, 4])
    assert len(paf_grouping.oks_nms(poses[:1], scores[:1], 0.5)) == 1
