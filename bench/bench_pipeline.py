"""Where the time of one body-pose detection goes, measured side by side in one run.

    python bench/bench_pipeline.py [--img IMAGE] [--scales 1] [--repeat 5] [--quick]

Times, on the embedded model (CPU), inside the real pipeline: the net forward; resizing
(input resize, pad, normalise; heatmap upsampling with the Gaussian smoothing folded in; PAF
interpolation matrices); peak finding (close duplicates merged); the PAF grouping (limb
scoring with lazily sampled PAFs + matching + assembling + sub-pixel joints + person scores +
duplicate people dropped).  Prints medians and the ratio of everything after the forward to
the forward (target: <= 25 % at one scale).
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import body_maps  # noqa: E402
import cli  # noqa: E402
import image_io  # noqa: E402
import paf_grouping  # noqa: E402
from entity import params  # noqa: E402
from pose_detector import PoseDetector  # noqa: E402

# The group photo of the figures in README/RESULTS; a plain clone without ../shared takes the
# shipped COCO image with the most people (5).
SHARED_IMG = os.path.join(REPO, '..', 'shared', 'data', 'images', 'people.png')
COCO_IMG = os.path.join(REPO, 'tests', 'data', 'coco_mini', '000000197388.jpg')


def default_image():
    return SHARED_IMG if os.path.exists(SHARED_IMG) else COCO_IMG


def one_run(det, img, scales):
    """Seconds per stage of one ``PoseDetector`` call, timed inside the real pipeline (the
    forward is wrapped to time it; everything else is what ``__call__`` runs)."""
    t = {'forward': 0.0}

    def timed_forward(x):
        t0 = time.perf_counter()
        out = det.forward(x)
        t['forward'] += time.perf_counter() - t0
        return out

    t0 = time.perf_counter()
    heat, pafs, _ = body_maps.compute_maps(img, timed_forward, det.arch, scales, smooth=True,
                                           lazy=True)
    t1 = time.perf_counter()
    heat = heat.select(paf_grouping.N_JOINTS)
    peaks = paf_grouping.joint_peaks(heat)
    t2 = time.perf_counter()
    people, _ = paf_grouping.group_peaks(heat, pafs, peaks, heat.shape[2])
    t3 = time.perf_counter()
    t['resize+smooth'] = t1 - t0 - t['forward']  # prepare inputs, upsample, smooth
    t['peaks'] = t2 - t1
    t['grouping'] = t3 - t2
    return t, len(people), len(peaks)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--img', default=default_image(),
                   help='the picture (default ../shared/data/images/people.png, without '
                   '../shared tests/data/coco_mini/000000197388.jpg)')
    p.add_argument('--scales', type=float, nargs='+', default=[1.0])
    p.add_argument('--repeat', type=int, default=7)
    p.add_argument('--quick', action='store_true', help='2 repeats (a smoke run)')
    args = p.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    img = image_io.read_image(args.img)
    det = PoseDetector(scales=args.scales)
    one_run(det, img, args.scales)  # warm-up
    runs = [one_run(det, img, args.scales) for _ in range(repeat)]
    names = ['forward', 'resize+smooth', 'peaks', 'grouping']
    med = {n: float(np.median([r[0][n] for r in runs])) for n in names}
    print('%s %dx%d, embedded %s, scales %s, %d runs (median):'
          % (os.path.basename(args.img), img.shape[1], img.shape[0], det.arch,
             ' '.join('%g' % s for s in args.scales), repeat))
    for n in names:
        print('  %-15s %8.1f ms  %5.1f %% of forward'
              % (n, med[n] * 1e3, 100 * med[n] / med['forward']))
    after = med['resize+smooth'] + med['peaks'] + med['grouping']
    print('  after forward   %8.1f ms  %5.1f %% of forward (target <= 25 %%)'
          % (after * 1e3, 100 * after / med['forward']))
    n_api = len(det(img)[0])
    print('  %d people, %d peaks (PoseDetector finds %d)' % (runs[-1][1], runs[-1][2], n_api))
    if n_api != runs[-1][1]:
        print('error: the timed stages found %d people, PoseDetector %d'
              % (runs[-1][1], n_api), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    cli.run_main(main)
