"""GPU speed of this project next to PyTorch, measured in the same run on the same GPU.

Prints every figure of the GPU issue's table: the CMU body net's forward at 368x656 (batch 1
and 8) and a CocoPoseNet training iteration (batch 10, 368x368, forward + backward + Adam) in
each ``--precision``; the embedded MobileNet's forward at 368x656 (eager and replayed as a
CUDA graph); ``camera_pose_demo.py --gpu 0`` frames per second on a generated 640x480 video;
GPU-vs-CPU differences of the maps and poses; the real ``train_coco_pose_estimation.py --gpu 0``
(loader included) against the bare training step; and PyTorch's figures from
``gpu_anchor_torch.py`` (cuDNN, fp32 / TF32 / bf16 channels-last) run as a subprocess, with
the ratio of ours to PyTorch's best mode.  Device times are CUDA-event medians after warm-up.

    python bench/bench_gpu.py [--torch-script PATH] [--json FILE] [--workdir DIR]
    python bench/bench_gpu.py --cpu     # rehearsal: CPU, tiny sizes (checks the plumbing)

The last lines are a table (``GPU_TABLE``) and ``GPU_JSON {...}``.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

from models import _gpu  # noqa: E402

RESULTS = {}
TORCH_DEFAULT = [os.path.join(REPO, '.gpu', 'shared', 'tools', 'gpu_anchor_torch.py'),
                 os.path.join(os.path.dirname(REPO), 'shared', 'tools', 'gpu_anchor_torch.py')]


def say(*a):
    print(*a, flush=True)


class Dev(object):
    """The device under test (CuPy), or the CPU for the rehearsal."""

    def __init__(self, cpu):
        self.cpu = cpu
        self.gpu = -1 if cpu else 0
        if cpu:
            self.xp = np
        else:
            import cupy
            self.xp = cupy
            cupy.cuda.Device(0).use()

    def sync(self):
        if not self.cpu:
            self.xp.cuda.get_current_stream().synchronize()

    def time_ms(self, fn, n=10, warm=3):
        """Median milliseconds of ``fn()`` (CUDA events around each call on the GPU)."""
        for _ in range(warm):
            fn()
        self.sync()
        times = []
        for _ in range(n):
            if self.cpu:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
                continue
            start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(self.xp.cuda.get_elapsed_time(start, end))
        return round(statistics.median(times), 2)

    def host(self, a):
        a = getattr(a, 'array', a)
        return a.get() if hasattr(a, 'get') else np.asarray(a)


def set_precision(mode):
    os.environ[_gpu.PRECISION_ENV] = mode


def rel_max(a, b):
    """max |a - b| / max |b|: the worst element against the maps' scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def body_forward(dev, args):
    from models.CocoPoseNet import CocoPoseNet
    hw = (32, 48) if dev.cpu else (368, 656)
    model = CocoPoseNet()
    x1 = np.random.default_rng(0).random((1, 3) + hw).astype(np.float32) - 0.5
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        cpu_maps = [a.array for a in (lambda r: (r[0][-1], r[1][-1]))(model(x1))]
        if not dev.cpu:
            model.to_gpu()
        for mode in args.precisions:
            set_precision(mode)
            for bs in (1, 8):
                x = dev.xp.asarray(np.repeat(x1, bs, axis=0))
                ms = dev.time_ms(lambda: model(x), n=args.n, warm=2)
                RESULTS['ours_%s_fwd_b%d_ms' % (mode, bs)] = ms
                say('body forward %s batch %d %dx%d: %.2f ms' % (mode, bs, hw[0], hw[1], ms))
            pafs, heatmaps = model(dev.xp.asarray(x1))
            err = max(rel_max(dev.host(pafs[-1]), cpu_maps[0]),
                      rel_max(dev.host(heatmaps[-1]), cpu_maps[1]))
            RESULTS['ours_%s_maps_maxrel_vs_cpu' % mode] = err
            say('body maps %s vs CPU: max rel %.2e' % (mode, err))


def train_step(dev, args):
    from models.CocoPoseNet import CocoPoseNet
    bs, side = (2, 32) if dev.cpu else (10, 368)
    for mode in args.precisions:
        set_precision(mode)
        model = CocoPoseNet()
        if not dev.cpu:
            model.to_gpu()
        opt = chainer.optimizers.Adam(alpha=1e-4)
        opt.setup(model)
        x = dev.xp.asarray(np.random.default_rng(1).standard_normal((bs, 3, side, side))
                           .astype(np.float32))

        def step():  # the PyTorch anchor's objective: mean squares of every stage's maps
            pafs, heatmaps = model(x)
            loss = sum(F.mean(F.square(a)) + F.mean(F.square(b)) for a, b in zip(pafs, heatmaps))
            model.cleargrads()
            loss.backward()
            opt.update()
        ms = dev.time_ms(step, n=max(3, args.n // 2), warm=2)
        RESULTS['ours_%s_train_step_b%d_%d_ms' % (mode, bs, side)] = ms
        say('train step %s batch %d %dx%d (fwd+bwd+Adam): %.2f ms' % (mode, bs, side, side, ms))
        del model, opt


def mobilenet(dev, args):
    from models import default_weights
    from pose_detector import load_model
    hw = (64, 96) if dev.cpu else (368, 656)
    model = load_model('mobilenet', default_weights('mobilenet'))
    if not dev.cpu:
        model.to_gpu()
    x = dev.xp.asarray((np.random.default_rng(2).random((1, 3) + hw) * 255).astype(np.float32))
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for graphs in ('0', '1'):
            os.environ['POSE_GPU_GRAPHS'] = graphs
            ms = dev.time_ms(lambda: model(x), n=args.n * 2, warm=_gpu.GRAPH_AFTER + 1)
            key = 'ours_mobilenet_fwd_b1_%s_ms' % ('graph' if graphs == '1' else 'eager')
            RESULTS[key] = ms
            say('MobileNet forward batch 1 %dx%d (%s): %.2f ms' % (hw + (key.split('_')[-2], ms)))
    os.environ.pop('POSE_GPU_GRAPHS', None)


def maps_and_poses(dev, args):
    """The embedded model's four-scale maps and poses on a real image, GPU vs CPU."""
    import image_io
    from pose_detector import PoseDetector
    img = image_io.read_image(os.path.join(REPO, 'data', '000000000785.jpg'))
    scales = [0.5] if dev.cpu else None
    out = {}
    for name, device in (('cpu', -1), ('gpu', dev.gpu)):
        det = PoseDetector(device=device, scales=scales)
        heat, paf, _ = det.compute_maps(img)
        poses, scores = det(img)
        out[name] = (heat, paf, poses)
    (h0, p0, q0), (h1, p1, q1) = out['cpu'], out['gpu']
    RESULTS['mobilenet_maps_maxrel_gpu_vs_cpu'] = max(rel_max(h1, h0), rel_max(p1, p0))
    RESULTS['poses_cpu_gpu'] = [len(q0), len(q1)]
    diff = float(np.abs(np.asarray(q1)[..., :2] - np.asarray(q0)[..., :2]).max()) \
        if len(q0) == len(q1) and len(q0) else None
    RESULTS['poses_max_px_diff'] = diff
    say('embedded model, 4 scales: maps GPU vs CPU max rel %.2e; people CPU %d GPU %d; max '
        'joint difference %s px' % (RESULTS['mobilenet_maps_maxrel_gpu_vs_cpu'], len(q0),
                                    len(q1), diff))


def make_video(path, frames):
    import cv2
    import image_io
    img = image_io.read_image(os.path.join(REPO, 'data', '000000000785.jpg'))
    img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 30, (640, 480))
    for i in range(frames):
        w.write(np.roll(img, 4 * i, axis=1))
    w.release()


def camera_demo(dev, args, work):
    video = os.path.join(work, 'walk640x480.avi')
    make_video(video, 12 if dev.cpu else 240)
    cmd = [sys.executable, os.path.join(REPO, 'camera_pose_demo.py'), '--video', video,
           '--no-display', '--no-progress', '--gpu', str(dev.gpu)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    m = re.search(r'mean ([\d.]+) FPS', p.stdout)
    if p.returncode or not m:
        raise RuntimeError('camera_pose_demo failed: %s' % (p.stderr.strip()[-500:]))
    RESULTS['camera_pose_demo_fps'] = float(m.group(1))
    say('camera_pose_demo.py --gpu %d, 640x480 video: %s' % (dev.gpu, p.stdout.strip()
                                                             .splitlines()[-1]))


def torch_anchor(dev, args):
    script = args.torch_script or next((p for p in TORCH_DEFAULT if os.path.exists(p)), None)
    if script is None or (dev.cpu and not args.torch_script):
        say('PyTorch anchor: skipped (%s)' % ('no script' if script is None else 'CPU rehearsal'))
        return
    p = subprocess.run([sys.executable, script], capture_output=True, text=True,
                       timeout=args.timeout)
    for line in p.stdout.splitlines():
        if line.startswith('TORCH ') and '{' in line:
            for k, v in json.loads(line[line.index('{'):]).items():
                RESULTS['torch_' + k] = v
    say('PyTorch anchor: %s' % (p.stdout.strip().splitlines()[-1] if p.stdout.strip()
                                else p.stderr.strip()[-300:]))


def training_script(dev, args, work):
    """The real script (loader processes included) vs the bare step on one fixed batch."""
    sys.path.insert(0, os.path.join(REPO, 'bench'))
    from bench_loader import mini_coco
    import coco_data_loader
    import train_coco_pose_estimation as T
    coco = mini_coco(work)
    side, bs, its = (64, 2, 4) if dev.cpu else (368, 10, 20)
    out = os.path.join(work, 'train')
    cmd = [sys.executable, os.path.join(REPO, 'train_coco_pose_estimation.py'), '--gpu',
           str(dev.gpu), '--arch', 'posenet', '--coco-dir', coco, '--out', out, '--insize',
           str(side), '--batchsize', str(bs), '--iteration', str(its), '--log-interval',
           str(its // 4), '--snapshot-interval', str(its), '--val-interval', '100000',
           '--val-samples', '2', '--loaderjob', str(args.loaderjob), '--no-progress']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=work)
    if p.returncode:
        raise RuntimeError('train_coco_pose_estimation failed: %s' % p.stderr.strip()[-800:])
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    (i0, t0), (i1, t1) = [(e['iteration'], e['elapsed_time']) for e in (log[0], log[-1])]
    script_rate = (i1 - i0) / (t1 - t0)
    # bare step: the same loss and optimiser on one fixed batch from the same loader
    from models.CocoPoseNet import CocoPoseNet
    model = CocoPoseNet()
    if not dev.cpu:
        model.to_gpu()
    loss = T.make_loss_chain(model, 'caffe')
    opt = chainer.optimizers.Adam(alpha=1e-4)
    opt.setup(loss)
    data = coco_data_loader.CocoDataLoader(coco, 'train', side)
    batch = chainer.dataset.concat_examples([data[i % len(data)] for i in range(bs)])
    batch = [dev.xp.asarray(a) for a in batch]
    bare = dev.time_ms(lambda: opt.update(loss, *batch), n=5, warm=2)
    RESULTS['train_script_it_per_s'] = round(script_rate, 3)
    RESULTS['train_bare_step_it_per_s'] = round(1e3 / bare, 3)
    say('train_coco_pose_estimation.py --gpu %d (posenet, batch %d, %d, --loaderjob %d): %.2f '
        'it/s; bare step %.2f it/s (%.0f %%)' % (dev.gpu, bs, side, args.loaderjob, script_rate,
                                                 1e3 / bare, 100 * script_rate * bare / 1e3))
    RESULTS['train_out'] = out


def ratio(ours, theirs):
    return None if ours is None or not theirs else round(ours / theirs, 2)


def table(args):
    r = RESULTS
    torch_modes = ('fp32', 'tf32', 'bf16_cl')
    rows = [('body fwd b1 368x656 ms', 'fwd_b1_368x656_ms', 'fwd_b1'),
            ('body fwd b8 368x656 ms', 'fwd_b8_368x656_ms', 'fwd_b8'),
            ('train step b10 368 ms', 'train_step_b10_368_ms', 'train_step_b10_368')]
    say('GPU_TABLE %-24s %s | %s | best ratio' % (
        'work', ' '.join('%9s' % ('ours ' + m) for m in args.precisions),
        ' '.join('%10s' % ('torch ' + m.split('_')[0]) for m in torch_modes)))
    for label, tkey, okey in rows:
        ours = [r.get('ours_%s_%s_ms' % (m, okey)) for m in args.precisions]
        theirs = [r.get('torch_%s_%s' % (m, tkey)) for m in torch_modes]
        best_o = min([v for v in ours if v] or [None]) if any(ours) else None
        best_t = min([v for v in theirs if v] or [0]) if any(theirs) else None
        r['ratio_' + okey] = ratio(best_o, best_t)
        say('GPU_TABLE %-24s %s | %s | %s' % (
            label, ' '.join('%9s' % v for v in ours), ' '.join('%10s' % v for v in theirs),
            r['ratio_' + okey]))
    for label, key in (('MobileNet fwd eager ms', 'ours_mobilenet_fwd_b1_eager_ms'),
                       ('MobileNet fwd graph ms', 'ours_mobilenet_fwd_b1_graph_ms'),
                       ('camera demo FPS', 'camera_pose_demo_fps'),
                       ('train script it/s', 'train_script_it_per_s'),
                       ('bare train step it/s', 'train_bare_step_it_per_s'),
                       ('MobileNet maps maxrel', 'mobilenet_maps_maxrel_gpu_vs_cpu'),
                       ('poses max px diff', 'poses_max_px_diff')):
        say('GPU_TABLE %-24s %s' % (label, r.get(key)))
    for m in args.precisions:
        say('GPU_TABLE %-24s %s' % ('body maps maxrel ' + m, r.get('ours_%s_maps_maxrel_vs_cpu'
                                                                   % m)))
    trains = {m: r.get('ours_%s_train_step_b10_368_ms' % m) for m in args.precisions}
    trains = {m: v for m, v in trains.items() if v}
    if trains:
        say('GPU_TABLE precision pick (fastest train step): %s (entity.params[\'gpu_precision\'] '
            '= %r now)' % (min(trains, key=trains.get), _gpu.params['gpu_precision']))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cpu', action='store_true', help='rehearsal on the CPU, tiny sizes')
    p.add_argument('--precisions', nargs='+', default=['fp32', 'tf32', 'bf16'],
                   choices=_gpu.PRECISIONS)
    p.add_argument('--n', type=int, default=10, help='timed repetitions')
    p.add_argument('--torch-script', help='gpu_anchor_torch.py (default: .gpu/ or '
                   '../shared/tools/)')
    p.add_argument('--loaderjob', type=int, default=8)
    p.add_argument('--timeout', type=int, default=240, help='seconds per subprocess')
    p.add_argument('--only', nargs='+', help='sections to run (default: all)')
    p.add_argument('--workdir', help='keep the generated video and training run here')
    p.add_argument('--json', help='write the figures here')
    args = p.parse_args(argv)
    if args.cpu:
        args.n = 2
    dev = Dev(args.cpu)
    work = args.workdir or tempfile.mkdtemp(prefix='bench-gpu-')
    os.makedirs(work, exist_ok=True)
    sections = [('body_forward', lambda: body_forward(dev, args)),
                ('train_step', lambda: train_step(dev, args)),
                ('torch_anchor', lambda: torch_anchor(dev, args)),
                ('mobilenet', lambda: mobilenet(dev, args)),
                ('maps_and_poses', lambda: maps_and_poses(dev, args)),
                ('camera_demo', lambda: camera_demo(dev, args, work)),
                ('training_script', lambda: training_script(dev, args, work))]
    failed = []

    def finish(*_):  # also on SIGTERM (a session's time limit): the figures so far
        os.environ.pop(_gpu.PRECISION_ENV, None)
        RESULTS['failed_sections'] = failed
        table(args)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(RESULTS, f, indent=1)
        say('GPU_JSON ' + json.dumps(RESULTS))
    signal.signal(signal.SIGTERM, lambda *_: (finish(), os._exit(124)))
    for name, run in sections:
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        try:
            run()
        except Exception as e:  # one broken section must not hide the others' figures
            import traceback
            traceback.print_exc()
            failed.append(name)
            say('SECTION %s FAILED: %s: %s' % (name, type(e).__name__, str(e)[:300]))
        say('# %s: %.1f s' % (name, time.perf_counter() - t))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    finish()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
