"""convert_model.py vs chainer.links.caffe.CaffeFunction on the same caffemodel.

Writes a random-weight caffemodel of the full CMU COCO body net (209 MB, the
size of ``pose_iter_440000.caffemodel``; layer list from the deploy prototxt
tests/support/cmu_nets.py writes) into a temp dir, then in the same run, each in
its own child process:

* ours: ``python convert_model.py posenet IN OUT.npz`` (whole command: start-up,
  imports, read, check, write);
* theirs: ``python -c "CaffeFunction(IN)"`` (start-up, imports, load), with
  ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, the only way Chainer's
  generated ``caffe_pb2`` imports under the pinned protobuf.

Wall time and the child's own peak RSS (``os.wait4`` rusage) are printed with
their ratios, and the weights each side read are compared (they must be equal).
Target for ours: <= 2 s and <= 1 GB.

    python bench/bench_convert.py            # full body net (~1-2 min, CaffeFunction is slow)
    python bench/bench_convert.py --quick    # VGG-19 front in the V1 format (23 MB)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

from models.CocoPoseNet import VGG19_FRONT  # noqa: E402
from support import caffe_files  # noqa: E402
from support.cmu_nets import conv_layers  # noqa: E402

CAFFE_CHILD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[3])
import compat  # before chainer: Chainer 7.8.1 on NumPy 2
import numpy as np
t = time.perf_counter()
from chainer.links.caffe import CaffeFunction
net = CaffeFunction(sys.argv[1])
load = time.perf_counter() - t
sums = {name: [float(np.sum(getattr(net, name).W.array, dtype=np.float64)),
               float(np.sum(getattr(net, name).b.array, dtype=np.float64))]
        for name in json.loads(sys.argv[2])}
print(json.dumps({'load_s': load, 'sums': sums}))
'''


def run_child(cmd, env=None):
    """Run ``cmd``; return (wall seconds, the child's peak RSS in MB, its stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit('child failed (%d): %s\n%s'
                     % (proc.returncode, ' '.join(cmd), err.read().decode()[-2000:]))
        return wall, usage.ru_maxrss / 1024.0, out.read().decode()


def make_caffemodel(path, quick):
    if quick:
        convs = [c for c in conv_layers('vgg19') if c[0] in VGG19_FRONT]
        arch, what, v1 = 'vgg19', 'VGG-19 conv1_1..conv4_2 (V1 format)', True
    else:
        convs = conv_layers('posenet')
        arch, what, v1 = 'posenet', 'CMU COCO body net (V2 format)', False
    caffe_files.write_caffemodel(path, caffe_files.random_conv_weights(convs, seed=0), v1=v1)
    return arch, what, [c[0] for c in convs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='a 23 MB VGG-19 front instead of the 209 MB body net')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench_convert.') as tmp:
        src = os.path.join(tmp, 'random.caffemodel')
        dst = os.path.join(tmp, 'out.npz')
        arch, what, names = make_caffemodel(src, args.quick)
        size_mb = os.path.getsize(src) / 1e6

        ours_wall, ours_rss, _ = run_child(
            [sys.executable, os.path.join(REPO, 'convert_model.py'), arch, src, dst])
        env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION='python')
        caffe_wall, caffe_rss, out = run_child(
            [sys.executable, '-c', CAFFE_CHILD, src, json.dumps(names), REPO], env=env)
        theirs = json.loads(out.strip().splitlines()[-1])

        with np.load(dst) as npz:
            same = all(
                [float(np.sum(npz[n + '/W'], dtype=np.float64)),
                 float(np.sum(npz[n + '/b'], dtype=np.float64))] == theirs['sums'][n]
                for n in names)

    print('bench_convert: %s, random weights, %.1f MB caffemodel, %d CPU(s)'
          % (what, size_mb, os.cpu_count()))
    print('%-34s %9s %13s' % ('', 'wall s', 'peak RSS MB'))
    print('%-34s %9.2f %13.0f' % ('ours: convert_model.py %s' % arch, ours_wall, ours_rss))
    print('%-34s %9.2f %13.0f   (load alone %.2f s)'
          % ('chainer CaffeFunction', caffe_wall, caffe_rss, theirs['load_s']))
    print('ratio CaffeFunction / ours: time %.1fx, peak RSS %.1fx'
          % (caffe_wall / ours_wall, caffe_rss / ours_rss))
    if not args.quick:
        print('targets for ours (<= 2 s, <= 1 GB): %s, %s'
              % ('met' if ours_wall <= 2 else 'MISSED', 'met' if ours_rss <= 1024 else 'MISSED'))
    print('same weights read by both: %s (%d layers)' % ('yes' if same else 'NO', len(names)))
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
