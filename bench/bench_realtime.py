"""Frame rate of the real-time pose demo loop next to the network forward alone.

The loop is camera_pose_demo's: ``frame_loop.run`` over a short video (decode,
PoseDetector at one scale = preprocessing + forward + upsampling + peaks +
grouping, drawing, FPS overlay), headless.  Frames are 432x368 (W x H), so the
net input at scale 1 is exactly 432x368.  The forward alone is
``PoseDetector.forward`` on the same preprocessed input.  Rounds alternate
(loop machinery with a do-nothing callback, pose drawing, forward x N, loop
over N frames, detector call x N, loop with --out and --json-dir) so that load
from other processes hits all alike; the median and the minimum over rounds of
the per-frame wall time are printed (the minimum is the least disturbed).  The
verdict uses a paired measure: the forward is also timed inside each loop run
(a wrapper around ``PoseDetector.forward``), and the loop's time is divided by
the forward time of the very same frames, which other processes' load on a
shared machine cannot bias.  The loop's overhead beyond the forward splits into the
detector's own pre/post-processing (body_maps, paf_grouping) and the loop's machinery and
drawing, which are printed on their own.  The demo's default loop tracks people and
smooths their keypoints (pose_tracker.py); the same loop with --no-track --no-smooth runs in
the same rounds, and the tracker's own time inside the loop is timed too (paired), for the
target of issue 19: tracking + smoothing <= 2 % of the loop.

    python bench/bench_realtime.py [--frames 6] [--rounds 10] [--quick]

Targets: loop time per frame <= 1.15 x the forward alone (overhead <= 15 %); tracking and
smoothing <= 2 % of the loop.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)

import frame_loop  # noqa: E402
import body_maps  # noqa: E402
from drawing import draw_person_pose  # noqa: E402
import pose_tracker  # noqa: E402
from camera_pose_demo import pose_process  # noqa: E402
from entity import params  # noqa: E402
from pose_detector import PoseDetector  # noqa: E402

SIZE = (432, 368)  # (W, H)
IMAGE = os.path.join(REPO, 'data', '000000000785.jpg')
TARGET = 0.15
TRACK_TARGET = 0.02


def make_video(path, n):
    """``n`` different 432x368 frames: the shipped COCO image, panned a few pixels per frame."""
    img = cv2.imread(IMAGE, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit('error: %s: cannot read the benchmark image' % IMAGE)
    h = SIZE[1]
    w = int(round(img.shape[1] * h / float(img.shape[0])))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10.0, SIZE)
    frames = []
    for i in range(n):
        x0 = (i * 7) % max(1, w - SIZE[0])
        frame = np.ascontiguousarray(img[:, x0:x0 + SIZE[0]])
        vw.write(frame)
        frames.append(frame)
    vw.release()
    return frames


class ForwardClock(object):
    """Wraps ``PoseDetector.forward`` and adds up the time spent in it, so that the forward
    inside the loop is timed in the very same frames as the loop (a paired measurement
    that load from other processes cannot bias)."""

    def __init__(self, forward):
        self.forward = forward
        self.total = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        self.total += time.perf_counter() - start
        return out


def per_frame(fn, n):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--frames', type=int, default=6, help='frames per round')
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--quick', action='store_true', help='4 frames x 2 rounds')
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.rounds = 4, 2

    detector = PoseDetector(scales=[1.0])  # the embedded model, as the demo's default
    arch = detector.arch
    ap = params['pose_archs'][arch]
    tmp = tempfile.mkdtemp(prefix='bench_realtime.')
    try:
        video = os.path.join(tmp, 'clip.mp4')
        frames = make_video(video, args.frames)
        # The decoded frames (what the loop sees) for the forward-only and detector timings.
        cap = cv2.VideoCapture(video)
        decoded = [cap.read()[1] for _ in frames]
        cap.release()
        inputs = []
        for f in decoded:
            rh, rw = body_maps.fit_size(f.shape[0], f.shape[1], params['inference_img_size'])
            padded, _ = body_maps.pad_to_multiple(body_maps.resize(f, (rh, rw)),
                                                  ap['pad_multiple'], ap['pad_value'])
            inputs.append(body_maps.preprocess(padded, arch))
        assert inputs[0].shape[-2:] == (SIZE[1], SIZE[0]), inputs[0].shape
        def forward_only():
            for x in inputs:
                detector.forward(x)

        def detector_only():
            for f in decoded:
                detector(f)

        def loop(out=None, json_dir=None, callback=None, track=True):
            # a fresh callback (and tracker) per run: each run starts the video's clock anew
            callback = callback or pose_process(detector, track=track, smooth=track)
            s = frame_loop.run(frame_loop.open_source(video=video), callback, out=out,
                               json_dir=json_dir, display=False, progress=False)
            assert s['frames'] == len(frames), s

        def machinery():  # the loop with a callback that does nothing: decode, FPS, bookkeeping
            loop(callback=lambda f: (f, {'people': []}))

        def drawing():
            for f in decoded:
                draw_person_pose(f, poses)

        n = len(frames)
        forward_only()  # warm-up
        loop()
        poses, _ = detector(decoded[0])
        clock = detector.forward = ForwardClock(detector.forward)
        tracker_clock = ForwardClock(pose_tracker.PoseTracker.update)
        pose_tracker.PoseTracker.update = lambda self, *a, **k: tracker_clock(self, *a, **k)
        times = {'forward': [], 'detector': [], 'loop': [], 'loop_out': [], 'machinery': [],
                 'drawing': [], 'loop_plain': []}
        paired = {'detector': [], 'loop': [], 'loop_out': [], 'loop_plain': []}  # / forward
        tracking = []  # the tracker's share of the loop
        for r in range(args.rounds):
            times['machinery'].append(per_frame(machinery, n))
            times['drawing'].append(per_frame(drawing, n))
            times['forward'].append(per_frame(forward_only, n))
            for key, fn in (('loop', loop), ('detector', detector_only),
                            ('loop_out', lambda: loop(os.path.join(tmp, 'out.mp4'),
                                                      os.path.join(tmp, 'json'))),
                            ('loop_plain', lambda: loop(track=False))):
                clock.total = tracker_clock.total = 0.0
                times[key].append(per_frame(fn, n))
                paired[key].append(times[key][-1] / (clock.total / n))
                if key == 'loop':
                    tracking.append(tracker_clock.total / n / times[key][-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print('pose demo loop, embedded %s model, one scale, %dx%d frames, headless, %d frames x %d '
          'rounds, %d CPUs' % (arch, SIZE[0], SIZE[1], n, args.rounds, os.cpu_count()))
    print('wall time per frame over rounds: median (FPS, vs forward) | min (vs forward); the min '
          'is the least disturbed by other processes')
    rows = [('network forward alone', 'forward'),
            ('detector call (pre + forward + post)', 'detector'),
            ('demo loop (decode, detect, draw, FPS)', 'loop'),
            ('demo loop --no-track --no-smooth', 'loop_plain'),
            ('demo loop + --out mp4 + --json-dir', 'loop_out'),
            ('  of which: loop machinery alone', 'machinery'),
            ('  of which: drawing the poses', 'drawing')]
    med = dict((k, statistics.median(v)) for k, v in times.items())
    low = dict((k, min(v)) for k, v in times.items())
    for label, key in rows:
        if key in ('machinery', 'drawing'):  # small parts: their share of the forward
            print('%-38s %7.1f ms  = %4.1f %% of the forward | %7.1f ms'
                  % (label, 1e3 * med[key], 100 * med[key] / med['forward'], 1e3 * low[key]))
            continue
        print('%-38s %7.1f ms %5.2f FPS %+6.1f %% | %7.1f ms %+6.1f %%'
              % (label, 1e3 * med[key], 1 / med[key], 100 * (med[key] / med['forward'] - 1),
                 1e3 * low[key], 100 * (low[key] / low['forward'] - 1)))
    share = statistics.median(tracking)
    print('tracking + smoothing (%d person): PoseTracker.update is %.2f %% of the demo loop '
          '(timed inside it, median over rounds; target <= %d %%): %s; the loop with them vs '
          'without, each over its own forward: %+.1f %% (noisy)'
          % (len(poses), 100 * share, 100 * TRACK_TARGET,
             'OK' if share <= TRACK_TARGET else 'OVER TARGET',
             100 * (statistics.median(paired['loop']) - statistics.median(paired['loop_plain']))))
    print('frame loop beyond the detector call: median %+.1f %%, min %+.1f %%'
          % (100 * (med['loop'] / med['detector'] - 1), 100 * (low['loop'] / low['detector'] - 1)))
    print("paired (each run's time / the forward inside that same run), median over rounds:")
    for label, key in [r for r in rows if r[1] in paired]:
        print('  %-36s %+6.1f %% beyond its forward' % (label, 100 * (statistics.median(paired[key]) - 1)))
    overhead = statistics.median(paired['loop']) - 1
    print('loop overhead beyond the forward (paired): %.1f %% (target <= %d %%): %s'
          % (100 * overhead, 100 * TARGET, 'OK' if overhead <= TARGET else 'OVER TARGET'))


if __name__ == '__main__':
    main()
