"""Keypoint AP of the accuracy techniques, each on and off, and how the defaults were chosen.

    python bench/bench_accuracy.py [--ann A --img-dir D] [--scales ...] [--quick]
    python bench/bench_accuracy.py --cv [--quick]

Ablation (default): COCO keypoint AP (pycocotools) of the embedded model on an annotated set
(default ``tests/data/coco_mini``) at the default scales and at the real-time demos' one
scale, with every technique of ``entity.params`` at its default and then each one switched
(flip averaging, sub-pixel peaks, close-peak merging, the person score, OKS NMS, the tuned
thresholds), plus everything off (the previous pipeline).  Time per image: the forwards
(measured once per net input, then cached so every row sees the same maps) plus the row's own
post-processing (median over the images).

``--cv``: how the thresholds and the person score were chosen without tuning on the 4 test
images alone.  Leave-one-image-out cross-validation over every annotated image: each image
gives four views (as is, mirrored with left/right labels swapped, 0.75x, 0.75x mirrored; the
net sees different pixels, the people are the same), each fold picks the grid point with the
best mean AP (default scales, one scale) on the other images' views (ties: mean OKS), and the
held-out image's views are scored with it.  Printed: each fold's choice, the pooled held-out
AP against the untuned thresholds, per person score, and the choice on all images.
"""
import argparse
import contextlib
import copy
import hashlib
import io
import itertools
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import evaluate_coco  # noqa: E402
import body_maps  # noqa: E402
import image_io  # noqa: E402
import paf_grouping  # noqa: E402
from entity import params  # noqa: E402
from pose_detector import PoseDetector  # noqa: E402

COCO_MINI = os.path.join(REPO, 'tests', 'data', 'coco_mini')
# the thresholds before issue 20, and the grid --cv searches
ORIGINAL = {'heatmap_peak_thresh': 0.05, 'inner_product_thresh': 0.05,
            'n_integ_points_thresh': 8}
GRID = {'heatmap_peak_thresh': [0.02, 0.03, 0.05, 0.08],
        'inner_product_thresh': [0.0, 0.02, 0.05, 0.1],
        'n_integ_points_thresh': [6, 7, 8, 9],
        'peak_nms_radius': [0, 5]}
QUICK_GRID = {'heatmap_peak_thresh': [0.02, 0.05], 'inner_product_thresh': [0.0, 0.05],
              'n_integ_points_thresh': [7, 8], 'peak_nms_radius': [0, 5]}
# COCO keypoints swapped by a mirror (COCO order)
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


@contextlib.contextmanager
def settings(**kw):
    """``entity.params`` with ``kw`` changed, restored afterwards."""
    old = {k: params[k] for k in kw}
    params.update(kw)
    try:
        yield
    finally:
        params.update(old)


class CachedNet(object):
    """``PoseDetector.forward`` run once per distinct input (keyed by its bytes), timed."""

    def __init__(self, detector):
        self.detector = detector
        self.cache = {}
        self.seconds = {}  # key -> forward time

    def __call__(self, x):
        key = (x.shape, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = self.detector.forward(x)
            self.seconds[key] = time.perf_counter() - t0
        self.last = key
        return self.cache[key]


class Dataset(object):
    """A COCO keypoint set in memory: pycocotools' COCO object and the decoded images."""

    def __init__(self, coco, images):
        self.coco, self.images = coco, images
        self.ids = sorted(images)

    @classmethod
    def load(cls, ann, img_dir):
        coco = evaluate_coco.load_coco(ann)
        images = {i: image_io.read_image(os.path.join(img_dir, coco.loadImgs(i)[0]['file_name']))
                  for i in coco.getImgIds()}
        return cls(coco, images)

    def views(self):
        """Four views of every image (as is, mirrored, 0.75x, 0.75x mirrored) with their
        keypoints moved (and left/right swapped) to match; view id = 10 * image id + k.
        Returns (Dataset, {view id: image id})."""
        from pycocotools.coco import COCO
        data = copy.deepcopy(self.coco.dataset)
        data['images'], data['annotations'] = [], []
        images, origin, ann_id = {}, {}, 1
        for im in self.coco.loadImgs(self.ids):
            img = self.images[im['id']]
            for k, (f, mirror) in enumerate([(1.0, False), (1.0, True), (0.75, False),
                                             (0.75, True)]):
                h, w = (int(round(n * f)) for n in img.shape[:2])
                view = img if f == 1 else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                vid = im['id'] * 10 + k
                images[vid] = np.ascontiguousarray(view[:, ::-1] if mirror else view)
                origin[vid] = im['id']
                data['images'].append(dict(im, id=vid, width=w, height=h))
                for a in self.coco.imgToAnns[im['id']]:
                    kp = np.array(a['keypoints'], np.float64).reshape(17, 3)
                    on = kp[:, 2] > 0
                    kp[on, :2] = (kp[on, :2] + 0.5) * f - 0.5
                    x, y, bw, bh = (v * f for v in a['bbox'])
                    if mirror:
                        kp[on, 0] = w - 1 - kp[on, 0]
                        kp, x = kp[COCO_FLIP], w - x - bw
                    data['annotations'].append(dict(
                        a, id=ann_id, image_id=vid, keypoints=kp.reshape(-1).tolist(),
                        bbox=[x, y, bw, bh], area=a['area'] * f * f,
                        segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
                    ann_id += 1
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return Dataset(coco, images), origin


def detect(data, net, arch, scales, flip, ids=None, **kw):
    """COCO results per image id with ``kw`` set in params, and the median seconds of
    everything but the forwards, and the mean forward seconds, per image."""
    results, post, fwd = {}, [], []
    with settings(**kw):
        for i in data.ids if ids is None else ids:
            keys, inside = [], [0.0]

            def forward(x):
                t = time.perf_counter()
                out = net(x)
                inside[0] += time.perf_counter() - t
                keys.append(net.last)
                return out
            t0 = time.perf_counter()
            heat, pafs, syx = body_maps.compute_maps(data.images[i], forward, arch, scales,
                                                     True, True, flip)
            poses, scores = paf_grouping.group_people(heat, pafs, smooth=False)
            poses = body_maps.to_image_coords(poses, syx)
            post.append(time.perf_counter() - t0 - inside[0])
            fwd.append(sum(net.seconds[k] for k in keys))
            results[i] = evaluate_coco.poses_to_coco(poses, evaluate_coco.person_score(poses,
                                                                                     scores), i)
    return results, float(np.median(post)), float(np.mean(fwd))


def score(data, results, ids=None):
    """(keypoint AP, mean over labelled people of their best OKS) on ``ids``."""
    from pycocotools.cocoeval import COCOeval
    ids = data.ids if ids is None else list(ids)
    dets = [r for i in ids for r in results[i]]
    if not dets:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(data.coco, data.coco.loadRes(dets), 'keypoints')
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    best = []
    for i in ids:
        ious = np.asarray(ev.ious[(i, 1)]).reshape(-1, len(data.coco.imgToAnns[i]))
        for k, a in enumerate(data.coco.imgToAnns[i]):
            if a['num_keypoints'] > 0:
                best.append(ious[:, k].max() if len(ious) else 0.0)
    return float(ev.stats[0]), float(np.mean(best))


def ablation_rows():
    """(label, params changes, flip) of every ablation row: the defaults, each technique
    switched from its default, everything off."""
    alternative = {  # key: (value when on, value when off, name)
        'peak_subpixel': ('quadratic', None, 'sub-pixel peaks'),
        'peak_nms_radius': (params['peak_nms_radius'] or 5, 0, 'close-peak merging'),
        'person_score': ('coco17', 'total', 'person score coco17 (off: total)'),
        'oks_nms_thresh': (params['oks_nms_thresh'] or 0.5, None, 'OKS NMS')}
    flip = params['flip_test']
    rows = [('defaults', {}, flip), ('flip averaging %s' % ('off' if flip else 'on'), {}, not flip)]
    for key, (on, off, name) in alternative.items():
        is_on = params[key] == on
        rows.append(('%s %s' % (name, 'off' if is_on else 'on'), {key: off if is_on else on},
                     flip))
    if {k: params[k] for k in ORIGINAL} != ORIGINAL:
        rows.append(('thresholds as before (%s)' % ', '.join('%g' % v for v in ORIGINAL.values()),
                     dict(ORIGINAL), flip))
    rows.append(('everything off (before issue 20)',
                 dict(ORIGINAL, **{k: v[1] for k, v in alternative.items()}), False))
    return rows


def run_ablation(data, net, arch, scale_sets):
    print('%-44s %s' % ('', '  '.join('%-24s' % ('scales ' + ' '.join('%g' % s for s in sc))
                                        for sc in scale_sets)))
    print('%-44s %s' % ('', '  '.join('%-24s' % 'AP     ms/img (fwd+post)' for _ in scale_sets)))
    for label, change, flip in ablation_rows():
        cells = []
        for sc in scale_sets:
            res, post, fwd = detect(data, net, arch, sc, flip, **change)
            cells.append('%.3f  %6.0f (%.0f+%.0f)' % (score(data, res)[0], (fwd + post) * 1e3,
                                                     fwd * 1e3, post * 1e3))
        print('%-44s %s' % (label, '  '.join('%-24s' % c for c in cells)), flush=True)


def run_cv(data, net, arch, grid, scale_sets):
    views, origin = data.views()
    images = sorted(set(origin.values()))
    folds = [[v for v in views.ids if origin[v] != i] for i in images]
    held = [[v for v in views.ids if origin[v] == i] for i in images]
    keys = list(grid)
    print('%d images -> %d views, %d labelled people; grid %s; %d points x %d person scores'
          % (len(images), len(views.ids),
             sum(a['num_keypoints'] > 0 for a in views.coco.dataset['annotations']),
             ', '.join('%s %s' % (k, grid[k]) for k in keys),
             int(np.prod([len(v) for v in grid.values()])), 2))
    table = []
    for values in itertools.product(*grid.values()):
        for mode in ('total', 'coco17'):
            change = dict(zip(keys, values), person_score=mode)
            res = [detect(views, net, arch, sc, False, **change)[0] for sc in scale_sets]
            table.append((change, res, [[score(views, r, f) for r in res] for f in folds]))

    def objective(scores):  # mean AP over the scale sets, then mean OKS
        return tuple(np.mean(scores, axis=0))
    untuned = dict(ORIGINAL, peak_nms_radius=0, person_score='total')
    base = [detect(views, net, arch, sc, False, **untuned)[0] for sc in scale_sets]
    labels = ['scales ' + ' '.join('%g' % s for s in sc) for sc in scale_sets]
    print('untuned thresholds, no merging, score total: AP %s' % ', '.join(
        '%s %.3f' % (lab, score(views, r)[0]) for lab, r in zip(labels, base)))
    for mode in ('total', 'coco17'):
        pool = [t for t in table if t[0]['person_score'] == mode]
        pooled = [dict() for _ in scale_sets]
        for k, image in enumerate(images):
            change, res, _ = max(pool, key=lambda t: objective(t[2][k]))
            print('  person score %s, image %d held out: %s' % (
                mode, image, ', '.join('%s %g' % (key, change[key]) for key in keys)))
            for s in range(len(scale_sets)):
                pooled[s].update({v: res[s][v] for v in held[k]})
        print('person score %s: held-out AP (pooled over folds) %s' % (mode, ', '.join(
            '%s %.3f' % (lab, score(views, p)[0]) for lab, p in zip(labels, pooled))))
        change, res, _ = max(pool, key=lambda t: objective([score(views, r) for r in t[1]]))
        print('  chosen on all images: %s (AP %s)' % (
            ', '.join('%s %g' % (key, change[key]) for key in keys),
            ', '.join('%.3f' % score(views, r)[0] for r in res)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--ann', default=os.path.join(COCO_MINI, 'test_coco.json'))
    p.add_argument('--img-dir', default=COCO_MINI)
    p.add_argument('--scales', type=float, nargs='+', default=None, metavar='S',
                   help='the multi-scale set (default: inference_scales); one scale is '
                        'always added (demo_scales)')
    p.add_argument('--cv', action='store_true', help='the cross-validation of the thresholds')
    p.add_argument('--quick', action='store_true',
                   help='two images, one scale set of 0.5 (ablation) or a small grid (--cv): '
                        'a smoke run')
    args = p.parse_args(argv)
    arch = params['default_pose_arch']
    data = Dataset.load(args.ann, args.img_dir)
    scales = list(args.scales or params['inference_scales'])
    scale_sets = [scales, list(params['demo_scales'])]
    if args.quick:
        data = Dataset(data.coco, {i: data.images[i] for i in data.ids[:2]})
        scale_sets = [[0.5]]
    net = CachedNet(PoseDetector(arch))
    first = data.images[data.ids[0]]
    for scales in scale_sets:  # warm-up (first calls build kernels and cached matrices)
        detect(Dataset(data.coco, {data.ids[0]: first}), CachedNet(net.detector), arch,
               scales, False)
    print('%s: %d images, %d labelled people; embedded %s; CPU times on this machine'
          % (os.path.basename(args.ann), len(data.ids),
             sum(len([a for a in data.coco.imgToAnns[i] if a['num_keypoints'] > 0])
                 for i in data.ids), arch))
    if args.cv:
        run_cv(data, net, arch, QUICK_GRID if args.quick else GRID, scale_sets)
    else:
        run_ablation(data, net, arch, scale_sets)
    return 0


if __name__ == '__main__':
    sys.exit(main())
