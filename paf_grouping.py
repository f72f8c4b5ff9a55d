"""The Part Affinity Field grouping of Cao et al. (CVPR'17) as plain NumPy functions of
(heatmaps, PAFs), usable with maps from any network.

``group_people(heatmaps, pafs)`` runs all of it: heatmaps smoothed (``smooth_heatmaps``),
joint candidates found (``find_peaks``, close duplicates merged by ``suppress_close_peaks``),
every candidate limb scored by the PAF line integral (``score_pairs``) and matched greedily per
limb (``compute_connections``), limbs joined into people (``assemble_people``), joints refined
to sub-pixel (``refine_peaks``), people scored for COCO's ranking (``person_scores``) and their
duplicates dropped (``oks_nms``).  Heatmaps and PAFs are (C, H, W) arrays or ``LazyMaps``
(lazy_maps.py), of which only the values read are computed.  All numbers come from
``entity.params``.
"""
import cv2
import numpy as np

from entity import JointType, params
from lazy_maps import LazyMaps, runs
from models import _blas

N_JOINTS = len(JointType)


def smooth_heatmaps(heatmaps, sigma=None, ksize=None):
    """Gaussian-smooth each (H, W) heatmap of a (C, H, W) stack (``gaussian_sigma``, ``ksize``)."""
    sigma = params['gaussian_sigma'] if sigma is None else sigma
    ksize = params['ksize'] if ksize is None else ksize
    heatmaps = np.asarray(heatmaps, np.float32)
    out = np.empty(heatmaps.shape, np.float32)
    for c in range(heatmaps.shape[0]):  # a loop over channels; cv2 does the pixels
        cv2.GaussianBlur(np.ascontiguousarray(heatmaps[c]), (ksize, ksize), sigma, dst=out[c])
    return out


# Pixels of one stacked image in find_peaks (~16 MB of float32): bounds the transient memory
# when a huge image's maps are noisy everywhere (a normal image fits in one).
PEAK_STACK_PIXELS = 1 << 22


def _canvas_maxima(canvas, thresh):
    """(row, column) of the local maxima above ``thresh`` inside a canvas of width 8k + 2
    whose outer rows and columns are never peaks, row-major."""
    inner = canvas[1:-1, 1:-1]
    # neighbours on shifted views: faster than two cv2.dilate
    nb = cv2.max(canvas[:-2, 1:-1], canvas[1:-1, :-2])
    cv2.max(nb, float(thresh), dst=nb)
    ok = cv2.compare(inner, nb, cv2.CMP_GT)
    cv2.max(canvas[2:, 1:-1], canvas[1:-1, 2:], dst=nb)
    cv2.bitwise_and(ok, cv2.compare(inner, nb, cv2.CMP_GE), dst=ok)
    # the 8-byte words holding any first (canvas widths are 8k + 2): several times faster
    # than a row-wise any() or a nonzero() over the bytes
    row, word = np.nonzero(ok.view(np.uint64) != 0)
    k, byte = np.nonzero(ok.reshape(len(ok), -1, 8)[row, word])
    return row[k] + 1, word[k] * 8 + byte + 1


def find_peaks(heatmaps, thresh=None):
    """Local maxima of each heatmap above ``thresh`` (``heatmap_peak_thresh``).

    ``heatmaps``: a (C, H, W) array, or a ``LazyMaps`` (only the rows and columns that can
    hold peaks are computed).  A peak is greater than its four neighbours (outside the map
    counts as 0).  Exact ties between neighbours (a maximum halfway between two pixels) keep
    the upper/left pixel: strictly greater than the up and left neighbours, at least the down
    and right ones.  (The original's strict test everywhere loses such a joint altogether.)
    At most ``max_peaks_per_part`` peaks per map are kept (the highest).
    Returns (N, 5) float64: joint type, x, y, score, peak id (= row), ordered by joint type,
    then row-major position.
    """
    thresh = params['heatmap_peak_thresh'] if thresh is None else thresh
    max_peaks = params['max_peaks_per_part']
    lazy = isinstance(heatmaps, LazyMaps)
    none = np.zeros((0, 5))
    if lazy:
        n_maps = len(heatmaps)
        if n_maps == 0:
            return none
        bounds, _ = heatmaps.bounds()
    else:
        hm = np.asarray(heatmaps, np.float32)
        (n_maps, _, width), bounds = hm.shape, hm.max(axis=2)
    # Only the runs of rows holding values above thresh (plus a row on each side, so that it
    # is exact for any thresh) can have peaks.  They are stacked into one image, a row of
    # zeros (= the border) after each, so that each cv2 call runs once for all maps: per-map
    # calls would cost more in call overhead than the search itself.
    seg_c, seg_y0, seg_y1 = runs(bounds, thresh)
    if len(seg_c) == 0:
        return none
    if lazy:
        # and of each run only the runs of columns that can hold such values
        run, seg_x0, seg_x1 = heatmaps.run_segments(seg_c, seg_y0, seg_y1, thresh)
        if len(run) == 0:
            return none
        seg_c, seg_y0, seg_y1 = seg_c[run], seg_y0[run], seg_y1[run]
    else:
        seg_x0, seg_x1 = np.zeros_like(seg_c), np.full_like(seg_c, width)
    # One canvas per class of block widths (within sqrt 2), each block after a row of zeros
    # and a column of zeros (= the border), in chunks of whole blocks of at most
    # PEAK_STACK_PIXELS.  (Blocks per run of columns, not one union of columns per class:
    # less than half the map values computed.)
    heights, widths = seg_y1 - seg_y0, seg_x1 - seg_x0
    wclass = np.ceil(np.log2(widths) * 2).astype(np.intp)
    chunk = np.empty(len(widths), np.intp)
    for k in np.unique(wclass):
        blocks = np.flatnonzero(wclass == k)
        ends = np.cumsum(heights[blocks] + 1)
        cols = int(widths[blocks].max()) + 2
        chunk[blocks] = k * len(widths) + (ends - 1) // max(1, PEAK_STACK_PIXELS // cols)
    found = []
    for k in np.unique(chunk):
        blocks = np.flatnonzero(chunk == k)
        c, y0, y1, x0, x1 = (v[blocks] for v in (seg_c, seg_y0, seg_y1, seg_x0, seg_x1))
        h, w = heights[blocks], widths[blocks]
        at = np.concatenate(([1], 1 + np.cumsum(h + 1)))
        shape = (int(at[-1]), -(-int(w.max()) // 8) * 8 + 2)  # see _canvas_maxima
        at = at[:-1]
        if lazy:
            canvas = heatmaps.stacked_segments(c, y0, y1, x0, x1, at, shape)
        else:
            canvas = np.zeros(shape, np.float32)
            for ck, a, b, start in zip(c, y0, y1, at):
                canvas[start:start + b - a, 1:1 + width] = hm[ck, a:b]
        row, col = _canvas_maxima(canvas, thresh)
        blk = np.searchsorted(at, row, side='right') - 1
        inside = (row - at[blk] < h[blk]) & (col <= w[blk])  # not in the zero margins
        row, col, blk = row[inside], col[inside], blk[inside]
        found.append((c[blk], x0[blk] + col - 1, y0[blk] + row - at[blk], canvas[row, col]))
    c, x, y, score = (np.concatenate(v) for v in zip(*found))
    if len(c) == 0:
        return none
    order = np.lexsort((x, y, c))  # back to map, then row-major order
    c, x, y, score = c[order], x[order], y[order], score[order]
    counts = np.bincount(c, minlength=n_maps)
    if counts.max() > max_peaks:
        # Noisy maps (e.g. untrained weights) can hold thousands of maxima, and limb
        # scoring is quadratic in them: keep the strongest per map, as OpenPose does.
        keep = np.ones(len(c), bool)
        for m in np.nonzero(counts > max_peaks)[0]:
            idx = np.nonzero(c == m)[0]
            keep[idx] = False
            keep[idx[np.argsort(-score[idx], kind='stable')[:max_peaks]]] = True
        c, x, y, score = c[keep], x[keep], y[keep], score[keep]
    peaks = np.empty((len(c), 5))
    peaks[:, 0] = c
    peaks[:, 1] = x
    peaks[:, 2] = y
    peaks[:, 3] = score
    peaks[:, 4] = np.arange(len(c))
    return peaks


def suppress_close_peaks(peaks, radius):
    """``find_peaks`` rows without the peaks that have a higher peak of the same joint within
    ``radius`` pixels (``peak_nms_radius``; 0 keeps all): maps averaged over scales or flips
    can have two maxima a pixel or two apart for one joint, and the per-limb matching may
    then take one for one limb and the other for the next, breaking the person in two.
    Order kept, peak ids renumbered."""
    if not radius or len(peaks) < 2:
        return peaks
    c, xy, score = peaks[:, 0], peaks[:, 1:3], peaks[:, 3]
    n = len(peaks)
    drop = np.zeros(n, bool)
    for i0 in range(0, n, 256):  # all pairs, 256 rows at a time (noisy maps: ~2000 peaks)
        i = np.arange(i0, min(i0 + 256, n))
        close = (c[i, None] == c) & (((xy[i, None] - xy) ** 2).sum(-1) <= radius ** 2)
        # j beats i: a higher score, or the same score and first in row-major order
        beats = (score > score[i, None]) | ((score == score[i, None]) & (np.arange(n) < i[:, None]))
        drop[i] = (close & beats).any(axis=1)
    out = peaks[~drop]
    out[:, 4] = np.arange(len(out))
    return out


def refine_peaks(heatmaps, peaks, method='quadratic'):
    """Sub-pixel ``peaks`` (``find_peaks`` rows): each moves along x and along y to the
    vertex of the parabola through it and its two neighbours (``parabola_offsets``); on the
    map's border an axis stays on the pixel.  ``heatmaps``: the (C, H, W) maps the peaks were
    found in, or their ``LazyMaps`` (5 values per peak are computed).  ``method``
    (``peak_subpixel``): 'quadratic', or None for the peaks unchanged.  Returns a copy."""
    peaks = np.array(peaks, np.float64, copy=True)
    if not method or len(peaks) == 0:
        return peaks
    if method != 'quadratic':
        raise ValueError('unknown peak_subpixel method %r' % (method,))
    h, w = heatmaps.shape[1:]
    c, x, y = (peaks[:, k].astype(np.intp) for k in range(3))
    cs = np.broadcast_to(c, (5, len(c)))
    xs = np.stack([x, np.maximum(x - 1, 0), np.minimum(x + 1, w - 1), x, x])
    ys = np.stack([y, y, y, np.maximum(y - 1, 0), np.minimum(y + 1, h - 1)])
    if isinstance(heatmaps, LazyMaps):
        v = heatmaps.sample(cs, ys, xs)
    else:
        v = np.asarray(heatmaps)[cs, ys, xs]
    peaks[:, 1] += np.where((x > 0) & (x < w - 1), parabola_offsets(v[1], v[0], v[2]), 0)
    peaks[:, 2] += np.where((y > 0) & (y < h - 1), parabola_offsets(v[3], v[0], v[4]), 0)
    return peaks


def parabola_offsets(before, centre, after):
    """Vertices of the parabolas through (-1, before), (0, centre), (1, after) (arrays),
    within [-0.5, 0.5]; 0 where there is no curvature."""
    before, centre, after = (np.asarray(v, np.float64) for v in (before, centre, after))
    curvature = before - 2.0 * centre + after
    ok = curvature < 0
    off = 0.5 * (before - after) / np.where(ok, curvature, -1.0)
    return np.where(ok, np.clip(off, -0.5, 0.5), 0.0)

# Pairs per score_pairs pass: the lazy PAF samples of one pass are ~2 * n_integ_points * mh
# floats per pair (~15 MB for 4096 pairs on 46-row maps).
SCORE_PAIRS_CHUNK = 4096


def score_pairs(pafs, limb, pos_a, pos_b, img_len):
    """Score candidate joint pairs of any limbs by the PAF line integral, all at once.

    ``pafs``: (38, H, W) array or ``LazyMaps``; ``limb`` (P,) limb index of each pair (its
    PAF is channels 2 * limb, 2 * limb + 1); ``pos_a``, ``pos_b`` (P, 2) x, y positions.  The
    PAF is sampled at ``n_integ_points`` evenly spaced points from a to b (rounded to pixels)
    and projected on the unit vector a->b.  Score = mean projection + min(limb_length_ratio *
    img_len / |ab| - length_penalty_value, 0).  A pair is valid when at least
    ``n_integ_points_thresh`` samples exceed ``inner_product_thresh`` and the score is > 0.
    (The original code asks for strictly more, 9 of 10; 8 of 10 is this project's spec, and
    no worse on coco_mini: bench/RESULTS.md.)

    Pairs are scored in chunks of ``SCORE_PAIRS_CHUNK`` (noisy maps can give ~300k pairs:
    all at once would hold gigabytes of samples).

    Returns (score (P,), valid (P,) bool).
    """
    limb = np.asarray(limb, np.intp).reshape(-1)
    if len(limb) > SCORE_PAIRS_CHUNK:
        parts = [score_pairs(pafs, limb[i:i + SCORE_PAIRS_CHUNK], pos_a[i:i + SCORE_PAIRS_CHUNK],
                             pos_b[i:i + SCORE_PAIRS_CHUNK], img_len)
                 for i in range(0, len(limb), SCORE_PAIRS_CHUNK)]
        return tuple(np.concatenate(v) for v in zip(*parts))
    n = params['n_integ_points']
    a = np.asarray(pos_a, np.float64).reshape(-1, 2)
    vec = np.asarray(pos_b, np.float64).reshape(-1, 2) - a  # (P, 2)
    norm = np.sqrt((vec ** 2).sum(-1))
    safe = np.where(norm > 0, norm, 1.0)
    unit = vec / safe[:, None]
    pts = a[:, None, :] + np.linspace(0.0, 1.0, n)[None, :, None] * vec[:, None, :]  # (P, n, 2)
    h, w = pafs.shape[1:]
    xs = np.clip(np.round(pts[..., 0]).astype(np.intp), 0, w - 1)
    ys = np.clip(np.round(pts[..., 1]).astype(np.intp), 0, h - 1)
    cx = np.broadcast_to(2 * limb[:, None], xs.shape)
    if isinstance(pafs, LazyMaps):
        px, py = pafs.sample(np.stack([cx, cx + 1]), ys, xs)
    else:
        px, py = pafs[cx, ys, xs], pafs[cx + 1, ys, xs]
    proj = px * unit[:, None, 0] + py * unit[:, None, 1]  # (P, n)
    penalty = np.minimum(params['limb_length_ratio'] * img_len / safe
                         - params['length_penalty_value'], 0)
    score = proj.mean(-1) + penalty
    n_good = (proj > params['inner_product_thresh']).sum(-1)
    valid = (norm > 0) & (n_good >= params['n_integ_points_thresh']) & (score > 0)
    return score, valid


def compute_connections(pafs, peaks, img_len):
    """For each limb, the greedy one-to-one matching of its candidate joint pairs.

    Pairs are taken in decreasing PAF score, skipping joints already used, until one side runs
    out.  Every limb's pairs are scored in one ``score_pairs`` call (per-limb calls would
    cost mostly NumPy call overhead).  Returns a list
    (one per limb) of (K, 3) arrays: peak id a, peak id b, PAF score.
    """
    limbs = np.array(params['limbs_point'], np.intp)  # (L, 2) joint types a, b
    joint_of = peaks[:, 0].astype(np.intp)
    by_joint = np.argsort(joint_of, kind='stable')  # peak ids grouped by joint type
    count = np.bincount(joint_of, minlength=N_JOINTS)
    first = np.concatenate(([0], np.cumsum(count)))
    # every candidate pair of every limb, a-major within a limb (the order ties are broken
    # in), without a Python loop over limbs
    na, nb = count[limbs[:, 0]], count[limbs[:, 1]]
    limb_of = np.repeat(np.arange(len(limbs)), na * nb)
    k = np.arange(len(limb_of)) - np.repeat(np.cumsum(na * nb) - na * nb, na * nb)
    pa = by_joint[first[limbs[limb_of, 0]] + k // nb[limb_of]]
    pb = by_joint[first[limbs[limb_of, 1]] + k % nb[limb_of]]
    connections = [[] for _ in params['limbs_point']]
    if len(limb_of):
        score, valid = score_pairs(pafs, limb_of, peaks[pa, 1:3], peaks[pb, 1:3], img_len)
        keep = np.flatnonzero(valid)
        # by limb, then decreasing score; ties keep the a-major pair order (stable sort)
        keep = keep[np.lexsort((-score[keep], limb_of[keep]))]
        used, full, most = set(), set(), np.minimum(na, nb).tolist()
        # greedy matching over candidate pairs, not pixels; on Python ints (NumPy scalars
        # in sets and tuples cost several times more)
        for limb, a, b, s in zip(limb_of[keep].tolist(), pa[keep].tolist(), pb[keep].tolist(),
                                 score[keep].tolist()):
            if limb in full or (limb, 'a', a) in used or (limb, 'b', b) in used:
                continue
            used.add((limb, 'a', a))
            used.add((limb, 'b', b))
            connections[limb].append((a, b, s))
            if len(connections[limb]) >= most[limb]:
                full.add(limb)
    return [np.array(c, np.float64).reshape(-1, 3) for c in connections]


# Columns of a person row (assemble_people) after its N_JOINTS peak ids.
LIMB_SUM, N_LIMBS, TOTAL, N_FOUND = N_JOINTS, N_JOINTS + 1, N_JOINTS + 2, N_JOINTS + 3


def assemble_people(connections, peaks):
    """Join the per-limb connections into people, limb by limb (the original's procedure).

    Each person is a row of ``N_JOINTS`` peak ids (-1 = missing), then the sum of its limbs'
    PAF scores (``LIMB_SUM``), its number of limbs (``N_LIMBS``), the total score (joint
    scores + connection scores, ``TOTAL``) and the number of joints (``N_FOUND``).  A
    connection touching one person extends it (also from the limb's end joint when its start
    is missing, which the original skips); touching two people merges them when they share
    no joint type (else each takes the joint it lacks); touching nobody starts a new person,
    except for the redundant limbs.  People with fewer than ``n_subset_limbs_thresh`` joints
    or a mean score below ``subset_score_thresh`` are dropped.  Returns (P, N_JOINTS + 4).
    """
    redundant = set(params['redundant_limbs'])
    peak_score = peaks[:, 3]
    people = []  # rows: N_JOINTS ids, limb score sum, limb count, score, joint count

    def add(p, joint, peak, s):
        p[joint] = peak
        p[N_FOUND] += 1
        p[TOTAL] += peak_score[peak] + s
        p[LIMB_SUM] += s
        p[N_LIMBS] += 1

    for limb, conns in enumerate(connections):
        ja, jb = params['limbs_point'][limb]
        for ida, idb, s in conns:
            ida, idb = int(ida), int(idb)
            owners = [p for p in people if p[ja] == ida or p[jb] == idb]
            if len(owners) == 1:
                p = owners[0]
                if p[ja] == ida and p[jb] != idb:
                    add(p, jb, idb, s)
                elif p[jb] == idb and p[ja] == -1:
                    # Reached from its end: an eye found through the ear when the nose is
                    # missing (the original drops such a joint).
                    add(p, ja, ida, s)
            elif len(owners) == 2:
                p1, p2 = owners
                overlap = (p1[:N_JOINTS] >= 0) & (p2[:N_JOINTS] >= 0)
                if not overlap.any():
                    p1[:N_JOINTS] += p2[:N_JOINTS] + 1
                    p1[N_JOINTS:] += p2[N_JOINTS:]
                    p1[TOTAL] += s
                    p1[LIMB_SUM] += s
                    p1[N_LIMBS] += 1
                    people = [p for p in people if p is not p2]
                else:
                    for p in (p1, p2):
                        for j, i in ((ja, ida), (jb, idb)):
                            if p[j] == -1:
                                add(p, j, i, s)
                                break
            elif not owners and limb not in redundant:
                p = np.full(N_JOINTS + 4, -1.0)
                p[ja], p[jb] = ida, idb
                p[N_FOUND] = 2
                p[TOTAL] = peak_score[ida] + peak_score[idb] + s
                p[LIMB_SUM], p[N_LIMBS] = s, 1
                people.append(p)
    people = np.array(people).reshape(-1, N_JOINTS + 4)
    keep = ((people[:, N_FOUND] >= params['n_subset_limbs_thresh'])
            & (people[:, TOTAL] / np.maximum(people[:, N_FOUND], 1)
               >= params['subset_score_thresh']))
    return people[keep]


def person_scores(people, peaks, mode=None):
    """The score each person of ``assemble_people`` is ranked by (``person_score``):
    'total', the original's sum of joint and limb scores (grows with the joints found); or
    'coco17', the mean peak score over COCO's 17 keypoints (a missing one counts 0: COCO's
    OKS counts a missed labelled keypoint as wrong) times the mean PAF score of its limbs."""
    mode = params['person_score'] if mode is None else mode
    if mode == 'total':
        return people[:, TOTAL].copy()
    if mode != 'coco17':
        raise ValueError('unknown person_score %r' % (mode,))
    ids = people[:, params['coco_joint_indices']].astype(np.intp)
    kp = np.where(ids >= 0, peaks[ids, 3], 0.0).mean(axis=1)
    return kp * people[:, LIMB_SUM] / np.maximum(people[:, N_LIMBS], 1)


def oks_nms(poses, scores, thresh):
    """Indices of the people to keep, best score first: a person is dropped when its
    keypoints are, by COCO's object keypoint similarity over its own found joints (a joint
    the better person lacks counts 0; scale: the better person's keypoint box), within
    ``thresh`` (``oks_nms_thresh``; None keeps all) of a better-scored kept person's.  Such
    duplicates come from the grouping when two peaks of one joint lie close together."""
    order = np.argsort(-np.asarray(scores), kind='stable')
    if thresh is None or len(order) < 2:
        return order
    sigmas = np.zeros(N_JOINTS)
    sigmas[params['coco_joint_indices']] = params['coco_keypoint_sigmas']
    sigmas[JointType.Neck] = params['neck_sigma']
    present = poses[:, :, 2] > 0
    span = np.where(present[..., None], poses[..., :2], np.nan)
    area = np.prod(np.nanmax(span, axis=1) - np.nanmin(span, axis=1), axis=1) + np.spacing(1)
    # sim[i, k]: OKS of person i's joints against person k (scale: k's keypoint box)
    d2 = ((poses[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1)  # (P, P, J)
    e = np.exp(-d2 / (2 * area[None, :, None] * (2 * sigmas) ** 2))
    sim = (np.where(present[:, None] & present[None], e, 0.0).sum(-1)
           / np.maximum(present.sum(-1), 1)[:, None])
    keep = []
    for i in order:  # greedy, best first (few people)
        if not keep or sim[i, keep].max() <= thresh:
            keep.append(i)
    return np.array(keep, np.intp)


def group_people(heatmaps, pafs, img_len=None, smooth=True):
    """PAF grouping of a (>=18, H, W) heatmap stack and a (38, H, W) PAF stack from any net.

    Heatmaps are Gaussian-smoothed (unless ``smooth`` is False), peaks found
    (``joint_peaks``), then grouped into people (``group_peaks``).  ``img_len`` is the
    length the limb-length penalty is relative to (default: the maps' width, as the
    original).

    Returns (poses (N, 18, 3): x, y, peak score per joint, missing joints 0,0,0; scores (N,)),
    people in the order the grouping found them.
    """
    if isinstance(heatmaps, LazyMaps):
        if smooth:
            raise ValueError('lazy heatmaps come smoothed (compute_maps): pass smooth=False')
        heatmaps = heatmaps.select(N_JOINTS)
    else:
        heatmaps = np.asarray(heatmaps)[:N_JOINTS]
        if smooth:
            heatmaps = smooth_heatmaps(heatmaps)
    if not isinstance(pafs, LazyMaps):
        pafs = np.asarray(pafs)
    if img_len is None:
        img_len = heatmaps.shape[2]
    return group_peaks(heatmaps, pafs, joint_peaks(heatmaps), img_len)


def joint_peaks(heatmaps):
    """The joint candidates of (N_JOINTS, H, W) smoothed heatmaps (array or ``LazyMaps``):
    ``find_peaks`` without the close duplicates (``suppress_close_peaks``)."""
    with _blas.own_threads():
        return suppress_close_peaks(find_peaks(heatmaps), params['peak_nms_radius'])


def group_peaks(heatmaps, pafs, peaks, img_len):
    """People from ``joint_peaks``: limbs scored and matched (``compute_connections``),
    people assembled (``assemble_people``), their joints refined to sub-pixel in
    ``heatmaps`` (``refine_peaks``), scored (``person_scores``) and their duplicates dropped
    (``oks_nms``).  Returns (poses (N, 18, 3), scores (N,)) as ``group_people``."""
    if len(peaks) == 0:
        return np.zeros((0, N_JOINTS, 3)), np.zeros(0)
    with _blas.own_threads():
        return _group_peaks(heatmaps, pafs, peaks, img_len)


def _group_peaks(heatmaps, pafs, peaks, img_len):
    people = assemble_people(compute_connections(pafs, peaks, img_len), peaks)
    poses = people_to_poses(people, refine_peaks(heatmaps, peaks, params['peak_subpixel']))
    scores = person_scores(people, peaks)
    keep = np.sort(oks_nms(poses, scores, params['oks_nms_thresh']))
    return poses[keep], scores[keep]


def people_to_poses(people, peaks):
    """(P, >= N_JOINTS) peak-id rows -> (P, N_JOINTS, 3) x, y, score (0, 0, 0 if missing)."""
    ids = people[:, :N_JOINTS].astype(np.intp)
    poses = np.zeros((len(people), N_JOINTS, 3))
    present = ids >= 0
    poses[present] = peaks[ids[present]][:, 1:4]
    return poses
