"""Video with known motion built from still COCO images, and the metrics that score a tracker
on it (used by bench/bench_tracking.py and tests/test_pose_tracker.py).

No labelled video is needed: every frame is a known affine warp of a COCO image (a camera
pan/zoom) or a COCO person cut out with its mask and pasted along a known path (walking across
other people, behind a pillar, out of the frame and back).  The ground truth of every frame is
the COCO keypoints moved by the same known motion.

Metrics:
* CLEAR MOT (Bernardin & Stiefelhagen 2008): per frame, ground-truth people and tracked
  people are paired by OKS >= ``MATCH_OKS`` (last frame's pairs kept while they still qualify,
  the rest by a maximum-OKS assignment); MOTA = 1 - (misses + false positives + ID switches)
  / ground-truth people, an ID switch being a person paired with another ID than before.
* IDF1 (Ristani et al. 2016): the one-to-one pairing of ground-truth and tracked identities
  that maximises the frames they are paired in (IDTP); IDF1 = 2 IDTP / (GT + tracked).
* jitter: the mean frame-to-frame displacement of a person's keypoints once the known motion
  is undone (the truth does not move), in % of the person's height;
* lag: the mean error of the smoothed keypoints along the direction of motion against the
  true position (the known motion applied to the person's mean detected keypoints, so that
  the detector's own bias does not count), in % of the person's height in the frame.
"""
import json

import cv2
import numpy as np

from coco_data_loader import coco_to_poses
from pose_tracker import linear_sum_assignment
from entity import params

MATCH_OKS = 0.3
# Walking speed, in person heights per second (1.4 m/s for a 1.7 m person).
WALK_HEIGHTS_PER_S = 1.4 / 1.7


class Person(object):
    """One COCO person: (18, 3) keypoints in our joint order (v > 0: labelled), its box and
    its polygon mask, in its image's coordinates."""

    def __init__(self, ann):
        self.kps = coco_to_poses([ann])[0].astype(np.float64)
        self.bbox = np.array(ann['bbox'], np.float64)
        self.height = float(self.bbox[3])
        self.area = float(ann['area'])
        self.polygons = [np.array(p, np.float64).reshape(-1, 2) for p in ann['segmentation']]


def load_coco_people(ann_file, image_name):
    """The labelled people (at least one keypoint) of ``image_name`` in a COCO file."""
    with open(ann_file) as f:
        coco = json.load(f)
    (image,) = [im for im in coco['images'] if im['file_name'] == image_name]
    return [Person(a) for a in coco['annotations']
            if a['image_id'] == image['id'] and a.get('num_keypoints', 0) > 0]


def apply_affine(a, xy):
    """2x3 affine ``a`` applied to (..., 2) points."""
    return xy @ a[:, :2].T + a[:, 2]


def invert_affine(a):
    return cv2.invertAffineTransform(np.asarray(a, np.float64))


class Sequence(object):
    """Frames, their timestamps (s) and per frame the truth: {person key: 2x3 affine from the
    person's source image to the frame, or None where the person is not in the frame}.

    ``people[key]`` is the source ``Person``; ``truth_pose(i, key)`` its keypoints in frame i
    (labelled joints inside the frame and not hidden by what is pasted over them).
    """

    def __init__(self, name, people):
        self.name, self.people = name, people
        self.frames, self.times, self.motion, self.hidden = [], [], [], []

    def add(self, frame, t, motion, hidden=None):
        self.frames.append(frame)
        self.times.append(float(t))
        self.motion.append(motion)
        self.hidden.append(hidden or {})

    def __len__(self):
        return len(self.frames)

    def truth_pose(self, i, key):
        a = self.motion[i].get(key)
        if a is None:
            return None
        kps = self.people[key].kps.copy()
        kps[:, :2] = apply_affine(a, kps[:, :2])
        h, w = self.frames[i].shape[:2]
        inside = (kps[:, 0] >= 0) & (kps[:, 0] < w) & (kps[:, 1] >= 0) & (kps[:, 1] < h)
        mask = self.hidden[i].get(key)
        if mask is not None:
            xi = np.clip(kps[:, 0].astype(int), 0, w - 1)
            yi = np.clip(kps[:, 1].astype(int), 0, h - 1)
            inside &= ~mask[yi, xi]
        kps[~inside] = 0.0
        return kps

    def scale(self, i, key):
        """How much the person is enlarged in frame i."""
        return float(np.sqrt(abs(np.linalg.det(self.motion[i][key][:, :2]))))

    def height(self, i, key):
        """The person's height in frame i, px."""
        return self.people[key].height * self.scale(i, key)

    def subsequence(self, order, name):
        """Frames re-ordered, dropped or repeated (``order``: frame indices)."""
        out = Sequence(name, self.people)
        for i in order:
            out.add(self.frames[i], self.times[i], self.motion[i], self.hidden[i])
        return out


def pan_zoom(img, people, n, size, fps=30.0, pan=(0.25, 0.05), zoom=(1.0, 1.15), start=None,
             name='pan'):
    """A camera panning and zooming smoothly over a still image: ``n`` frames of ``size`` (w, h);
    the window's centre moves by ``pan`` (x, y, in source-image heights per second) and the
    scale goes linearly from ``zoom[0]`` to ``zoom[1]`` times the scale that fits the image
    height into the frame."""
    w, h = size
    ih, iw = img.shape[:2]
    base = h / float(ih)
    cx0, cy0 = (iw / 2.0, ih / 2.0) if start is None else start
    seq = Sequence(name, dict(enumerate(people)))
    for i in range(n):
        t = i / fps
        s = base * (zoom[0] + (zoom[1] - zoom[0]) * i / max(n - 1, 1))
        cx, cy = cx0 + pan[0] * ih * t, cy0 + pan[1] * ih * t
        a = np.array([[s, 0, w / 2.0 - s * cx], [0, s, h / 2.0 - s * cy]])
        frame = cv2.warpAffine(img, a, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        seq.add(frame, t, dict((k, a) for k in seq.people))
    return seq


def person_mask(person, shape):
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in person.polygons], 1)
    return mask.astype(bool)


def walk(background, bg_people, fg_img, fg_person, n, fps=30.0, height=None, x0=None,
         speed=None, path=None, pillar=None, name='walk'):
    """A person (``fg_person`` of ``fg_img``, cut out by its mask, scaled to ``height`` px)
    walking over a still ``background`` whose people are ``bg_people``.

    Its box's left edge is at ``path(t)`` px (default: ``x0 + speed * t``, ``speed`` in its
    heights per second, default walking speed), its feet a fixed distance above the bottom.
    ``pillar`` = (x, width): a grey pillar painted over everything in that column band.
    """
    bh, bw = background.shape[:2]
    height = 0.66 * bh if height is None else height
    speed = WALK_HEIGHTS_PER_S if speed is None else speed
    s = height / fg_person.height
    x_box, y_box = fg_person.bbox[:2]
    if path is None:
        x0 = -0.2 * height if x0 is None else x0
        path = lambda t: x0 + speed * height * t  # noqa: E731
    top = bh - 0.08 * bh - height
    src_mask = person_mask(fg_person, fg_img.shape).astype(np.uint8) * 255
    people = dict(('bg%d' % k, p) for k, p in enumerate(bg_people))
    people['walker'] = fg_person
    seq = Sequence(name, people)
    still = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for i in range(n):
        t = i / fps
        a = np.array([[s, 0, path(t) - s * x_box], [0, s, top - s * y_box]])
        fg = cv2.warpAffine(fg_img, a, (bw, bh), flags=cv2.INTER_LINEAR)
        m = cv2.warpAffine(src_mask, a, (bw, bh), flags=cv2.INTER_LINEAR) > 127
        frame = background.copy()
        frame[m] = fg[m]
        hidden = dict(('bg%d' % k, m) for k in range(len(bg_people)))
        motion = dict(('bg%d' % k, still) for k in range(len(bg_people)))
        motion['walker'] = a if m.any() else None
        if pillar is not None:
            px, pw = pillar
            frame[:, px:px + pw] = 128
            band = np.zeros((bh, bw), bool)
            band[:, px:px + pw] = True
            hidden = dict((k, v | band) for k, v in hidden.items())
            hidden['walker'] = band
        seq.add(frame, t, motion, hidden)
    return seq


def leave_and_return(x0, x_out, gap, speed_px):
    """A path (box left edge, px, against time) walking right from ``x0`` to ``x_out``, staying
    there ``gap`` seconds, then walking back left."""
    t_out = (x_out - x0) / float(speed_px)

    def path(t):
        return x0 + speed_px * min(t, t_out) - speed_px * max(0.0, t - t_out - gap)
    return path


def detect(seq, detector):
    """The detector's (poses, scores) for every frame of ``seq``."""
    return [detector(f) for f in seq.frames]


def run_tracker(tracker, detections, times):
    """Feed ``detections`` (per frame (poses, scores)) to ``tracker``; per frame (ids, raw,
    smoothed) of the tracked people (ID >= 0)."""
    out = []
    for (poses, scores), t in zip(detections, times):
        ids, smoothed = tracker.update(poses, t, scores)
        keep = ids >= 0
        out.append((ids[keep], np.asarray(poses)[keep], smoothed[keep]))
    return out


def coco_oks(truth, areas, hyp):
    """COCO's OKS (pycocotools' computeOks) of each ground-truth pose (G, 18, 3; v > 0
    labelled) with its segment area (G,) against each hypothesis (H, 18, 3): over the truth's
    labelled joints, a joint the hypothesis lacks counting 0.  (G, H)."""
    truth, hyp = np.asarray(truth, np.float64), np.asarray(hyp, np.float64)
    if len(truth) == 0 or len(hyp) == 0:
        return np.zeros((len(truth), len(hyp)))
    var = (2.0 * np.asarray(params['track_oks_sigmas'])) ** 2
    d2 = ((truth[:, None, :, :2] - hyp[None, :, :, :2]) ** 2).sum(-1)
    e = np.exp(-d2 / var / (np.asarray(areas, np.float64)[:, None, None] + np.spacing(1)) / 2)
    labelled, found = truth[:, :, 2] > 0, hyp[:, :, 2] > 0
    e = e * labelled[:, None, :] * found[None, :, :]
    return e.sum(-1) / np.maximum(labelled.sum(1), 1)[:, None]


def _pair(sim, thresh):
    r, c = linear_sum_assignment(-sim)
    keep = sim[r, c] >= thresh
    return list(zip(r[keep].tolist(), c[keep].tolist()))




def evaluate(seq, tracked, min_joints=3):
    """CLEAR MOT and IDF1 of ``tracked`` (run_tracker's output) on ``seq``, and the per-frame
    pairing {(frame, person key): row in that frame's tracked people} used for jitter and lag.

    A ground-truth person counts in a frame when at least ``min_joints`` of its labelled
    joints are in view."""
    n_gt = n_hyp = misses = false_pos = switches = 0
    last_id = {}
    pairs_of = {}
    co = {}  # (person key, track ID) -> frames paired by OKS alone (IDF1)
    gt_frames, hyp_frames = {}, {}
    for i, (ids, _raw, smoothed) in enumerate(tracked):
        keys, truths, areas = [], [], []
        for key in seq.people:
            p = seq.truth_pose(i, key)
            if p is not None and (p[:, 2] > 0).sum() >= min_joints:
                keys.append(key)
                truths.append(p)
                areas.append(seq.people[key].area * seq.scale(i, key) ** 2)
        sim = coco_oks(np.array(truths).reshape(-1, 18, 3), areas, smoothed)
        n_gt += len(keys)
        n_hyp += len(ids)
        for key in keys:
            gt_frames[key] = gt_frames.get(key, 0) + 1
        for h in ids.tolist():
            hyp_frames[h] = hyp_frames.get(h, 0) + 1
        # CLEAR MOT: keep last frame's pairs that still qualify, assign the rest
        matched, used = {}, set()
        for g, key in enumerate(keys):
            if key in last_id and last_id[key] in ids.tolist():
                h = ids.tolist().index(last_id[key])
                if sim[g, h] >= MATCH_OKS and h not in used:
                    matched[g] = h
                    used.add(h)
        free_g = [g for g in range(len(keys)) if g not in matched]
        free_h = [h for h in range(len(ids)) if h not in used]
        if free_g and free_h:
            for a, b in _pair(sim[np.ix_(free_g, free_h)], MATCH_OKS):
                matched[free_g[a]] = free_h[b]
        for g, h in matched.items():
            key, tid = keys[g], int(ids[h])
            if key in last_id and last_id[key] != tid:
                switches += 1
            last_id[key] = tid
            pairs_of[(i, key)] = h
        misses += len(keys) - len(matched)
        false_pos += len(ids) - len(matched)
        # IDF1 counts co-occurrence under the OKS criterion alone
        for g, h in zip(*np.nonzero(sim >= MATCH_OKS)):
            k = (keys[g], int(ids[h]))
            co[k] = co.get(k, 0) + 1
    gkeys, hkeys = sorted(gt_frames, key=str), sorted(hyp_frames)
    idtp = 0
    if gkeys and hkeys:
        m = np.array([[co.get((g, h), 0) for h in hkeys] for g in gkeys], np.float64)
        r, c = linear_sum_assignment(-m)
        idtp = int(m[r, c].sum())
    mota = 1.0 - (misses + false_pos + switches) / max(n_gt, 1)
    idf1 = 2.0 * idtp / max(n_gt + n_hyp, 1)
    return {'gt': n_gt, 'tracked': n_hyp, 'misses': misses, 'false_positives': false_pos,
            'id_switches': switches, 'mota': mota, 'idf1': idf1, 'idtp': idtp,
            'ids_per_person': dict((key, sorted({tid for (g, tid) in co if g == key}))
                                   for key in gkeys)}, pairs_of


def jitter_and_lag(seq, tracked, pairs_of, warmup=10):
    """Jitter of the raw and the smoothed keypoints and the lag of the smoothed ones (see the
    module), in % of each person's height, averaged over people, joints and frames.  Frames
    of a person's first ``warmup`` paired frames do not count for the lag (the filter starts
    on the detection itself)."""
    steps = {'raw': [], 'smoothed': []}
    back = {}  # (key) -> list of (frame, track ID, raw back-projected (18, 3))
    for (i, key), h in sorted(pairs_of.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        ids, raw, smoothed = tracked[i]
        inv = invert_affine(seq.motion[i][key])
        scale = seq.people[key].height
        back.setdefault(key, []).append((i, int(ids[h]), raw[h], smoothed[h], inv, scale))
    lags = []
    for key, rows in back.items():
        for (i0, id0, r0, s0, inv0, sc), (i1, id1, r1, s1, inv1, _) in zip(rows, rows[1:]):
            if id0 != id1 or i1 != i0 + 1:
                continue
            seen = (r0[:, 2] > 0) & (r1[:, 2] > 0)
            for name, a, b in (('raw', r0, r1), ('smoothed', s0, s1)):
                d = apply_affine(inv1, b[seen, :2]) - apply_affine(inv0, a[seen, :2])
                steps[name].extend((np.hypot(d[:, 0], d[:, 1]) / sc).tolist())
        # lag: smoothed minus the true position, the truth being the known motion of the
        # person's mean back-projected detection (per joint)
        pts = np.array([apply_affine(inv, r[:, :2]) for (_, _, r, _, inv, _) in rows])
        seen = np.array([r[:, 2] > 0 for (_, _, r, _, _, _) in rows])
        count = seen.sum(0)
        mean = (pts * seen[..., None]).sum(0) / np.maximum(count, 1)[:, None]
        for n, (i, tid, r, s, inv, sc) in enumerate(rows):
            if n < warmup or i == 0 or (i - 1, key) not in pairs_of:
                continue
            a, a_prev = seq.motion[i][key], seq.motion[i - 1][key]
            if a_prev is None:
                continue
            true_now = apply_affine(a, mean)
            motion = true_now - apply_affine(a_prev, mean)
            speed = np.hypot(motion[:, 0], motion[:, 1])
            ok = (r[:, 2] > 0) & (count > 0) & (speed > 1e-6)
            if not ok.any():
                continue
            along = ((true_now[ok] - s[ok, :2]) * motion[ok]).sum(1) / speed[ok]
            lags.extend((along / seq.height(i, key)).tolist())
    out = {'lag': 100 * float(np.mean(lags)) if lags else float('nan')}
    for name, f in (('', np.mean), ('_rms', lambda v: np.sqrt(np.mean(np.square(v))))):
        jr = float(f(steps['raw'])) if steps['raw'] else float('nan')
        js = float(f(steps['smoothed'])) if steps['smoothed'] else float('nan')
        out.update({'jitter%s_raw' % name: 100 * jr, 'jitter%s_smoothed' % name: 100 * js,
                    'jitter%s_cut' % name: 1.0 - js / jr if jr > 0 else float('nan')})
    return out


def standard_sequences(coco_dir, ann_file, which=None, frames=None):
    """The sequences of the bench and the tests, from coco_mini's images (``coco_dir``) and
    ``ann_file``: name -> Sequence.  ``which``: names to build (default all); ``frames``:
    shorten the camera pan to this many frames."""
    def image(name):
        img = cv2.imread('%s/%s.jpg' % (coco_dir, name), cv2.IMREAD_COLOR)
        if img is None:
            raise IOError('%s/%s.jpg: cannot read' % (coco_dir, name))
        return img, load_coco_people(ann_file, name + '.jpg')

    want = lambda name: which is None or name in which  # noqa: E731
    out = {}
    skiers, skiers_people = image('000000197388')       # five skiers
    seated, seated_people = image('000000040083')       # two seated men
    skier, (skier_person,) = image('000000000785')      # one skier, cut out to walk
    if want('pan') or want('pan, dropped + repeated frames'):
        # 30 FPS: a webcam's rate
        pan = pan_zoom(skiers, skiers_people, frames or 60, (432, 288))
        out['pan'] = pan
        if want('pan, dropped + repeated frames'):
            # every 5th frame dropped, every 7th shown twice with the same timestamp
            order = [j for i in range(len(pan)) if i % 5 != 4
                     for j in ([i, i] if i % 7 == 3 else [i])]
            out['pan, dropped + repeated frames'] = pan.subsequence(
                order, 'pan, dropped + repeated frames')
    if want('crossing'):
        # walking in front of both seated men, from the left edge
        out['crossing'] = walk(seated, seated_people, skier, skier_person, 60, x0=-40,
                               name='crossing')
    if want('pillar'):
        # 15 FPS, over a background blurred so that nobody else is seen; fully hidden by the
        # pillar for about 0.65 s
        blurred = cv2.GaussianBlur(seated, (0, 0), 12)
        out['pillar'] = walk(blurred, [], skier, skier_person, 45, fps=15.0, x0=-40,
                             height=0.5 * seated.shape[0], pillar=(150, 120), name='pillar')
    if want('leave and return'):
        # 10 FPS; out of the frame for 1.5 s (longer than track_max_lost_s)
        h = 0.66 * seated.shape[0]
        speed = WALK_HEIGHTS_PER_S * h
        path = leave_and_return(330.0, seated.shape[1] + 10.0, 1.5, speed)
        out['leave and return'] = walk(seated, seated_people, skier, skier_person, 36,
                                       fps=10.0, height=h, path=path, name='leave and return')
    return out
