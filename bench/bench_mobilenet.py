"""Forward time of the Chainer MobileNetV2PoseNet vs cv2.dnn on the same input.

Both run the tf-pose ``mobilenet_v2_small`` network on the same BGR image at
432x368 and 656x368 (W x H); runs alternate (Chainer, cv2.dnn, Chainer, ...) so
that load from other processes hits both alike, and the medians and their ratio
are printed.  cv2.dnn cannot evaluate the graph's dynamic resize size, so a
fixed-size copy of the graph is written to a temp dir for each size
(``tfgraph_fixed.fix_resize_size``).  Chainer runs in inference mode
(``train=False`` + ``no_backprop_mode``), which takes the model's fast paths.

    python bench/bench_mobilenet.py [--rounds 10] [--stock] [--quick]

``--stock`` also times the differentiable path (stock Chainer functions, which
the model uses for training), the justification of the inference fast paths.

Target: Chainer <= 1.5x cv2.dnn.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import chainer  # noqa: E402
import cv2  # noqa: E402

from entity import params  # noqa: E402
from models import _mobilenet_fast as _mf  # noqa: E402
from models.MobileNetV2PoseNet import MobileNetV2PoseNet  # noqa: E402
from support import tfgraph_fixed  # noqa: E402

TEST_DATA = os.path.join(REPO, 'tests', 'data')
SIZES = [(432, 368), (656, 368)]  # (W, H)


def time_once(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def input_and_dnn(image, pb, w, h, tmpdir):
    """The net input for ``image`` at W x H (BGR, INTER_AREA, NCHW float32) and cv2.dnn's
    net for that size: a copy of the graph ``pb`` with its resize size fixed, which cv2.dnn
    cannot evaluate (``tfgraph_fixed.fix_resize_size``), written to ``tmpdir``."""
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
    fixed = os.path.join(tmpdir, 'fixed%dx%d.pb' % (w, h))
    tfgraph_fixed.fix_resize_size(pb, fixed, (h, w))
    return x, cv2.dnn.readNetFromTensorflow(fixed)


def bench(model, pb, image, sizes, rounds, tmpdir, stock=False):
    rows = []
    for w, h in sizes:
        x, net = input_and_dnn(image, pb, w, h, tmpdir)

        def run_chainer():
            with chainer.using_config('train', False), chainer.no_backprop_mode():
                pafs, heatmaps = model(x)
            return np.concatenate([heatmaps[-1].array[0], pafs[-1].array[0]])

        def run_dnn():
            net.setInput(x)
            return net.forward()[0]

        def run_stock():  # the differentiable path: stock Chainer functions
            with chainer.using_config('train', False):
                pafs, heatmaps = model(x)
            return np.concatenate([heatmaps[-1].array[0], pafs[-1].array[0]])

        run_chainer(), run_dnn()  # warm-up (allocations, OpenCV's layer setup)
        tc, td, ts = [], [], []
        for _ in range(rounds):
            t, out_c = time_once(run_chainer)
            tc.append(t)
            t, out_d = time_once(run_dnn)
            td.append(t)
            if stock:
                ts.append(time_once(run_stock)[0])
        c, d = float(np.median(tc)), float(np.median(td))
        diff = float(np.abs(out_c - out_d).max())
        rows.append((w, h, c, d, c / d, diff))
        extra = ('   stock-Chainer path %7.1f ms (%.2fx)' % (np.median(ts) * 1e3, np.median(ts) / d)
                 if stock else '')
        print('%4dx%-4d  chainer %7.1f ms   cv2.dnn %7.1f ms   ratio %.2fx   max|diff| %.3f%s'
              % (w, h, c * 1e3, d * 1e3, c / d, diff, extra), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--weights',
                        default=os.path.join(REPO, params['default_weights']['mobilenet']))
    parser.add_argument('--pb', default=os.path.join(TEST_DATA, 'tfpose',
                                                      'tfpose_mobilenet_v2_small.pb'))
    parser.add_argument('--image', default=os.path.join(TEST_DATA, 'coco_mini',
                                                         '000000000785.jpg'))
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--stock', action='store_true',
                        help='also time the differentiable path (stock Chainer functions)')
    parser.add_argument('--quick', action='store_true',
                        help='one size (432x368), 2 rounds: a smoke test for the test suite')
    args = parser.parse_args(argv)
    missing = compat.cv2_dnn_missing('readNetFromTensorflow')
    if missing:
        raise SystemExit('error: %s' % missing)

    model = MobileNetV2PoseNet()
    chainer.serializers.load_npz(args.weights, model)
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit('error: cannot read image %s' % args.image)
    sizes = SIZES[:1] if args.quick else SIZES
    rounds = 2 if args.quick else args.rounds
    print('chainer %s, numpy %s, opencv %s, %d rounds, medians; depthwise: %s'
          % (chainer.__version__, np.__version__, cv2.__version__, rounds,
             _mf.depthwise_kernel()))
    with tempfile.TemporaryDirectory() as tmpdir:
        bench(model, args.pb, image, sizes, rounds, tmpdir, stock=args.stock)


if __name__ == '__main__':
    main()
