"""One frame loop for the real-time demos (camera_pose_demo.py, camera_face_demo.py).

Frames come from a camera (``--device N``), a video file (``--video FILE``) or a
folder of images (``--images DIR``, natural sort order).  Each frame goes
through a callback ``process(frame, t) -> (annotated_frame, openpose_dict)`` (``t``: the
frame's time in seconds, for tracking; callbacks may take the frame alone); the
loop adds the frame rate, shows the result (``q`` or Esc quits), writes an
annotated video (``--out``) and one OpenPose-style JSON per frame
(``--json-dir``), and prints one summary line at the end.

Robustness rules:
- no display (no ``$DISPLAY``/``$WAYLAND_DISPLAY``, or a headless OpenCV
  build) -> one-line notice, the run continues headless;
- frames a video cannot decode and files of a folder that are not images are
  skipped with a warning and counted, never abort the run;
- Ctrl-C (SIGINT) or SIGTERM stops the loop cleanly: the output video is
  closed (playable) and renamed into place, the summary is printed, exit 130;
- the video is checked when closed (FFmpeg reports no write errors: a full disk
  leaves an unplayable file), and is kept only if it holds every frame; a JSON
  that cannot be written stops the JSON output, not the video (exit 2 at the end);
- what OpenCV's libraries print on stderr is captured, not shown.
"""
import compat
import argparse
import contextlib
import inspect
import math
import os
import re
import signal
import sys
import time

import cv2
import numpy as np

import cli
import image_io
from cli import UserError, atomic_output
from entity import params

# FourCC per output container; both encoders ship with the opencv-python(-headless) wheels.
VIDEO_CODECS = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'mp4v', '.avi': 'MJPG'}

# A video read that fails is retried this many times before the video is taken as
# ended (a damaged frame fails once, the next read succeeds).
MAX_CONSECUTIVE_READ_FAILURES = 25

OPENPOSE_JSON_VERSION = 1.3


warn = cli.warn  # one-line warning that keeps a running tqdm bar intact


_opencv_quiet = compat.opencv_quiet


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


# ---------------------------------------------------------------------------
# Frame sources.  Each yields (frame_number, frame); ``skipped`` counts frames
# that could not be read; ``json_name(frame_number)`` names the JSON file as
# OpenPose does for that kind of input.

class CameraSource(object):
    kind = 'camera'
    total = None  # no progress bar: a camera has no end

    def __init__(self, device):
        self.device = device
        self.name = 'camera %d' % device
        with _opencv_quiet():
            cap = cv2.VideoCapture(device)
            opened = cap.isOpened()
        if not opened:
            cap.release()
            raise UserError('cannot open camera --device %d (no such camera, or it is busy)'
                            % device)
        width, height = params['camera_frame_size']
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.cap = cap
        # The camera's nominal rate (often 30) says nothing about how fast frames are processed,
        # so --out uses demo_out_fps unless --out-fps is given.
        self.fps = None
        self.skipped = 0

    def json_name(self, frame_no, _name=None):
        # OpenPose names webcam frames by number only.
        return '%012d_keypoints.json' % frame_no

    def __iter__(self):
        frame_no = 0
        failures = 0
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                failures += 1
                if failures >= MAX_CONSECUTIVE_READ_FAILURES:
                    warn('%s stopped delivering frames' % self.name)
                    return
                continue
            if failures:
                self.skipped += failures
                warn('%s: %d frame(s) could not be captured' % (self.name, failures))
                failures = 0
            yield frame_no, frame
            frame_no += 1

    def close(self):
        self.cap.release()


class VideoSource(object):
    kind = 'video'

    def __init__(self, path):
        self.path = path
        self.name = path
        if not os.path.exists(path):
            raise UserError('%s: video file not found' % path)
        if os.path.isdir(path):
            raise UserError('%s: is a folder (use --images DIR for a folder of images)' % path)
        with _opencv_quiet(), cli.library_stderr() as said:
            cap = cv2.VideoCapture(path)
            opened = cap.isOpened()
        if not opened:
            cap.release()
            raise UserError('%s: cannot open as a video (unknown format or damaged file%s)'
                            % (path, '; ' + said[-1] if said else ''))
        self.cap = cap
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if out_fps_ok(fps) else None  # a damaged header's rate is not used
        self.stem = os.path.splitext(os.path.basename(path))[0]
        self.skipped = 0

    def json_name(self, frame_no, _name=None):
        # OpenPose: <video name>_<frame number, 12 digits>_keypoints.json
        return '%s_%012d_keypoints.json' % (self.stem, frame_no)

    def __iter__(self):
        # CameraSource's loop in shape only: a video's failed reads are numbered frames (they
        # count in frame_no, FFmpeg is quietened) and its end is known from the frame count.
        frame_no = 0   # the frame's index in the video, damaged frames included
        failures = 0
        while True:
            with cli.library_stderr():  # FFmpeg's lines on damaged frames: counted below
                ok, frame = self.cap.read()
            if not ok or frame is None:
                at_end = self.total is not None and frame_no + failures >= self.total
                failures += 1
                if at_end or failures >= MAX_CONSECUTIVE_READ_FAILURES:
                    return  # failures not followed by a good frame are the end of the file
                continue
            if failures:
                warn('%s: skipped %d unreadable frame(s) before frame %d'
                     % (self.path, failures, frame_no + failures))
                self.skipped += failures
                frame_no += failures
                failures = 0
            yield frame_no, frame
            frame_no += 1

    def close(self):
        self.cap.release()


class ImageFolderSource(object):
    kind = 'images'
    fps = None

    def __init__(self, folder):
        self.name = folder
        if not os.path.exists(folder):
            raise UserError('%s: folder not found' % folder)
        if not os.path.isdir(folder):
            raise UserError('%s: not a folder (use --video FILE for a video)' % folder)
        try:
            names = os.listdir(folder)
        except OSError as e:
            raise UserError('%s: cannot list folder (%s)' % (folder, e.strerror or e))
        self.files = sorted((n for n in names if not n.startswith('.')
                             and os.path.isfile(os.path.join(folder, n))), key=_natural_key)
        if not self.files:
            raise UserError('%s: folder has no files' % folder)
        self.folder = folder
        self.total = len(self.files)
        self.skipped = 0

    def json_name(self, frame_no, name):
        # OpenPose names the JSON of an image after the image.
        return '%s_keypoints.json' % os.path.splitext(name)[0]

    def __iter__(self):
        for frame_no, name in enumerate(self.files):
            path = os.path.join(self.folder, name)
            try:  # the shared reader: EXIF orientation, depths, pixel limit, as every tool
                frame = image_io.read_image(path)
            except UserError as e:
                reason = str(e)
                if reason.startswith(path + ': '):
                    reason = reason[len(path) + 2:]
                warn('%s: not a readable image, skipped (%s)' % (path, reason))
                self.skipped += 1
                continue
            yield frame_no, frame, name

    def close(self):
        pass


def open_source(device=None, video=None, images=None):
    """The frame source chosen on the command line; the camera ``device`` by default."""
    if video is not None:
        return VideoSource(video)
    if images is not None:
        return ImageFolderSource(images)
    return CameraSource(0 if device is None else device)


def _frames(source):
    """(frame_number, frame, name) from any source."""
    for item in source:
        if len(item) == 3:
            yield item
        else:
            yield item[0], item[1], None


# ---------------------------------------------------------------------------
# Outputs

def display_available(window='result'):
    """(True, None) when a window can be opened (it opens ``window``), else (False, one-line
    reason).  The one display check of the demos, the data-loader check and the mask viewer."""
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY')
                                                 or os.environ.get('WAYLAND_DISPLAY')):
        return False, 'no display ($DISPLAY is not set)'
    try:
        cv2.namedWindow(window, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        return False, 'this OpenCV build has no GUI support (e.g. opencv-python-headless)'
    return True, None


class Display(object):
    """``cv2.imshow`` window; ``show`` returns False once the user asked to quit."""
    window = 'result'

    def show(self, frame):
        cv2.imshow(self.window, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord('q'), ord('Q'), 27):  # q or Esc
            return False
        try:  # the window was closed with the mouse
            if cv2.getWindowProperty(self.window, cv2.WND_PROP_VISIBLE) < 1:
                return False
        except cv2.error:
            pass
        return True

    def close(self):
        try:
            cv2.destroyWindow(self.window)
            cv2.waitKey(1)
        except cv2.error:
            pass


def check_video_path(path, inputs=()):
    """``--out``: a video type we can write, a regular file or new path (cli.check_outputs)
    that is not one of ``inputs`` ((label, path) pairs)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_CODECS:
        raise UserError('--out %s: unsupported video type %r (use one of %s)'
                        % (path, ext, ', '.join(sorted(VIDEO_CODECS))))
    cli.check_outputs([('--out', path)], inputs)


def out_fps_ok(fps):
    lo, hi = params['out_fps_range']
    return fps is not None and lo <= fps <= hi  # False for NaN


def check_out_fps(fps):
    """``--out-fps`` within ``out_fps_range`` (infinity hangs OpenCV's writer)."""
    if fps is not None and not out_fps_ok(fps):
        raise UserError('--out-fps %g: must be between %g and %g frames per second'
                        % ((fps,) + tuple(params['out_fps_range'])))


def fit_frame(frame, size):
    """``frame`` letterboxed (aspect kept, black borders) into ``size`` = (w, h)."""
    w, h = size
    fh, fw = frame.shape[:2]
    if (fw, fh) == (w, h):
        return frame
    s = min(w / float(fw), h / float(fh))
    nw, nh = max(1, int(round(fw * s))), max(1, int(round(fh * s)))
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((h, w, 3), np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return canvas


class VideoOut(object):
    """Annotated video, opened at the first frame (its size fixes the video's size).

    Encoders need even sizes: an odd width/height is padded by one black pixel
    (not cropped).  Later frames of another size are letterboxed in.
    Written to a temporary file in the target folder, renamed when closed if it
    holds every frame written.
    """

    def __init__(self, path, fps, stack):
        self.path, self.fps, self.stack = path, fps, stack
        self.writer = None
        self.size = None
        self.frames = 0
        self.tmp = None

    def write(self, frame):
        if self.writer is None:
            h, w = frame.shape[:2]
            self.size = (w + w % 2, h + h % 2)
            self.tmp = self.stack.enter_context(atomic_output(self.path))
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[os.path.splitext(self.path)[1].lower()])
            with _opencv_quiet(), cli.library_stderr() as said:
                writer = cv2.VideoWriter(self.tmp, fourcc, float(self.fps), self.size)
            if not writer.isOpened():
                raise UserError('--out %s: OpenCV cannot write this video type here%s'
                                % (self.path, ' (%s)' % said[-1] if said else ''))
            self.writer = writer
            # Runs before atomic_output's rename (ExitStack unwinds in reverse order).
            self.stack.push(self._close)
        if (frame.shape[1], frame.shape[0]) != self.size:
            if frame.shape[1] + frame.shape[1] % 2 == self.size[0] and \
                    frame.shape[0] + frame.shape[0] % 2 == self.size[1]:
                frame = cv2.copyMakeBorder(frame, 0, self.size[1] - frame.shape[0], 0,
                                           self.size[0] - frame.shape[1], cv2.BORDER_CONSTANT)
            else:
                frame = fit_frame(frame, self.size)
        with cli.library_stderr():
            self.writer.write(frame)
        self.frames += 1

    def _close(self, exc_type, exc, tb):
        """Release the writer; on a normal end, refuse a file that does not hold every frame
        (FFmpeg's writer reports no errors: a full disk leaves a truncated, unplayable file)."""
        with cli.library_stderr():
            self.writer.release()
        if exc_type is None:
            with _opencv_quiet(), cli.library_stderr():
                cap = cv2.VideoCapture(self.tmp)
                held = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
                cap.release()
            if held != self.frames:
                raise UserError('--out %s: the video could not be written completely (%d of '
                                '%d frames in the file%s); nothing kept'
                                % (self.path, max(held, 0), self.frames,
                                   _disk_state(os.path.dirname(self.tmp))))
        return False


def _disk_state(directory):
    """', the disk is full' when ``directory``'s file system has no space left."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return ''
    return ', the disk is full' if st.f_bavail * st.f_frsize < (1 << 16) else ''


def openpose_people(people):
    """OpenPose's per-frame JSON: ``{"version": 1.3, "people": [...]}``.

    ``people`` is a list of dicts with any of ``pose``, ``face``, ``hand_left``,
    ``hand_right``: (K, 3) arrays of x, y, confidence (missing points all 0), and ``id``, the
    person's tracking ID (default -1: none).  ``pose_raw``, the body keypoints before
    smoothing, is written as ``pose_keypoints_2d_raw`` when given.
    """
    def flat(pts):
        return [round(float(v), 3) for v in np.asarray(pts, np.float64).reshape(-1)]

    out = []
    for person in people:
        entry = {'person_id': [int(person.get('id', -1))]}
        for key in ('pose', 'face', 'hand_left', 'hand_right'):
            pts = person.get(key)
            entry['%s_keypoints_2d' % key] = [] if pts is None else flat(pts)
        if person.get('pose_raw') is not None:
            entry['pose_keypoints_2d_raw'] = flat(person['pose_raw'])
        out.append(entry)
    return {'version': OPENPOSE_JSON_VERSION, 'people': out}


def draw_fps(img, fps):
    """'FPS n.n' top-left, white on a black outline, sized to the frame (in place)."""
    text = 'FPS %.1f' % fps
    scale = min(1.0, max(0.35, img.shape[0] / 680.0))
    thick = max(1, int(round(2 * scale)))
    org = (int(8 * scale) + 2, int(28 * scale) + 2)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------------------
# Tracking (pose_tracker.py): each frame's timestamp for the callbacks that follow people
# over time, and the demos' --track/--smooth flags

def frame_time(source, frame_no, rate):
    """Seconds: the camera's clock at capture, the video's own timestamp, else (image
    folders, videos without timestamps) the frame number at ``rate`` frames per second, the
    rate at which --out plays the frames."""
    kind = getattr(source, 'kind', None)
    if kind == 'camera':
        return time.monotonic()
    if kind == 'video':
        ms = source.cap.get(cv2.CAP_PROP_POS_MSEC)  # of the frame just read
        if math.isfinite(ms) and (ms > 0 or frame_no == 0):
            return ms / 1000.0
    return frame_no / float(rate)


def _takes_time(process):
    try:
        sig = inspect.signature(process)
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in sig.parameters.values()]
    return (inspect.Parameter.VAR_POSITIONAL in kinds or
            sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for k in kinds) >= 2)


def with_frame_time(process, source, rate):
    """``call(frame, frame_no)``: ``process(frame, t)`` with the frame's time in seconds
    (``process(frame)`` for callbacks of one argument).  Timestamps that do not increase are
    passed on as they are (the tracker steps over them) with one warning."""
    if not _takes_time(process):
        return lambda frame, frame_no: process(frame)
    last = [None, False]

    def call(frame, frame_no):
        t = frame_time(source, frame_no, rate)
        if last[0] is not None and t <= last[0] and not last[1]:
            warn('%s: frame %d has timestamp %.3f s, not after the previous frame\'s %.3f s '
                 '(tracking takes it as one frame interval later)'
                 % (source.name, frame_no, t, last[0]))
            last[1] = True
        last[0] = t
        return process(frame, t)
    return call


def add_tracking_arguments(parser, what='people'):
    """--track/--no-track, --smooth/--no-smooth (both on by default)."""
    parser.add_argument('--track', action=argparse.BooleanOptionalAction, default=True,
                        help='give each of the %s a persistent ID, drawn and written as '
                        'person_id (default: on)' % what)
    parser.add_argument('--smooth', action=argparse.BooleanOptionalAction, default=True,
                        help='smooth positions over time (One-Euro filter, see README; '
                        'default: on)')
    return parser


# ---------------------------------------------------------------------------
# The loop

@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt():
    """SIGINT and SIGTERM raise KeyboardInterrupt while the loop runs.

    Set explicitly because Python leaves SIGINT ignored when it starts ignored
    (e.g. a job started with ``&`` by a non-interactive shell).
    """
    def handler(signum, frame):
        raise KeyboardInterrupt
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                saved[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def run(source, process, out=None, json_dir=None, display=True, out_fps=None, progress=True):
    """Run ``process`` over every frame of ``source``; returns a summary dict.

    ``process(frame, t) -> (annotated_frame, openpose_dict)``, ``t`` the frame's time in
    seconds (see ``frame_time``; ``process(frame)`` also works).  The summary holds
    frames, skipped, mean_fps (frames processed per second of the loop),
    people (total found), interrupted (Ctrl-C/SIGTERM), quit (q/Esc), json_error (why
    the JSON output stopped, or None).  A video that cannot be completed raises
    ``UserError`` (the JSON files written stay).
    """
    from tqdm import tqdm

    check_out_fps(out_fps)
    if out is not None:
        check_video_path(out)
    if json_dir is not None:
        if os.path.exists(json_dir) and not os.path.isdir(json_dir):
            raise UserError('--json-dir %s: exists and is not a folder' % json_dir)
        try:
            os.makedirs(json_dir, exist_ok=True)
        except OSError as e:
            raise UserError('--json-dir %s: cannot create (%s)' % (json_dir, e.strerror or e))
        cli.check_writable(json_dir, '--json-dir %s' % json_dir)

    window = None
    if display:
        ok, reason = display_available()
        if ok:
            window = Display()
        else:
            print('note: %s; running headless (add --no-display to silence this)' % reason,
                  file=sys.stderr)

    summary = {'frames': 0, 'skipped': 0, 'mean_fps': 0.0, 'people': 0,
               'interrupted': False, 'quit': False, 'out': None, 'json_error': None}
    call = with_frame_time(process, source, out_fps or source.fps or params['demo_out_fps'])
    fps_ema = None
    bar = tqdm(total=source.total, unit='frame', dynamic_ncols=True,
               disable=not progress or source.total is None, file=sys.stderr)
    start = time.perf_counter()
    last = None
    try:
        with _interrupts_as_keyboard_interrupt(), contextlib.ExitStack() as stack:
            video = VideoOut(out, out_fps or source.fps or params['demo_out_fps'], stack) \
                if out is not None else None
            try:
                for frame_no, frame, name in _frames(source):
                    if last is None:
                        start = time.perf_counter()
                    annotated, people = call(frame, frame_no)
                    now = time.perf_counter()
                    if last is not None:
                        rate = 1.0 / max(now - last, 1e-6)
                        fps_ema = rate if fps_ema is None else 0.8 * fps_ema + 0.2 * rate
                    last = now
                    if fps_ema is not None:
                        draw_fps(annotated, fps_ema)
                    if video is not None:
                        video.write(annotated)
                    if json_dir is not None:
                        try:
                            cli.write_json_atomic(
                                os.path.join(json_dir, source.json_name(frame_no, name)), people)
                        except UserError as e:  # e.g. a full disk: the video goes on
                            summary['json_error'] = str(e)
                            warn('%s; no more JSON files are written' % e)
                            json_dir = None
                    summary['frames'] += 1
                    summary['people'] += len(people.get('people', []))
                    bar.update(summary['frames'] + source.skipped - bar.n)
                    if window is not None and not window.show(annotated):
                        summary['quit'] = True
                        break
            except KeyboardInterrupt:
                summary['interrupted'] = True
            end = time.perf_counter()
            if video is not None and video.writer is not None:
                summary['out'] = out
    finally:
        bar.close()
        if window is not None:
            window.close()
        source.close()
    summary['skipped'] = source.skipped
    elapsed = end - start
    if summary['frames']:
        summary['mean_fps'] = summary['frames'] / max(elapsed, 1e-9)
    return summary


def format_summary(summary, label='people'):
    parts = ['%d frames' % summary['frames'], '%d skipped' % summary['skipped'],
             'mean %.2f FPS' % summary['mean_fps'], '%d %s found' % (summary['people'], label)]
    line = 'done: ' + ', '.join(parts)
    if summary['out']:
        line += '; video: %s' % summary['out']
    if summary['interrupted']:
        line += ' (interrupted)'
    if summary.get('json_error'):
        line += '; JSON output stopped'
    return line


# ---------------------------------------------------------------------------
# Command-line plumbing shared by the demos

def add_arguments(parser):
    """The input/output flags both demos take."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument('--device', type=int, default=None, metavar='N',
                     help='camera index (default: 0, the first camera)')
    src.add_argument('--video', metavar='FILE', help='read frames from a video file')
    src.add_argument('--images', metavar='DIR',
                     help='read the images of a folder, in natural sort order')
    parser.add_argument('--out', metavar='FILE',
                        help='write the annotated frames to a video (.mp4, .avi, .mkv)')
    parser.add_argument('--out-fps', type=float, default=None, metavar='FPS',
                        help="frame rate of --out (default: the input video's, else %g)"
                        % params['demo_out_fps'])
    parser.add_argument('--json-dir', metavar='DIR',
                        help='write one OpenPose-style JSON per frame into DIR')
    parser.add_argument('--no-display', action='store_true',
                        help='do not open a window (servers, batch runs)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def run_from_args(args, make_process, label='people', inputs=()):
    """Open the source, then build the callback (loads the model), then loop.

    The source is opened first so a missing camera or file fails in a second,
    before any model is loaded; ``--out`` must not be the video read nor one of ``inputs``
    ((label, path) pairs: the weights).  Returns the exit status (130 if interrupted).
    """
    check_out_fps(args.out_fps)
    if args.out is not None:
        check_video_path(args.out, [('--video', args.video)] + list(inputs))
    source = open_source(args.device, args.video, args.images)
    try:
        process = make_process()
    except BaseException:
        source.close()
        raise
    summary = run(source, process, out=args.out, json_dir=args.json_dir,
                  display=not args.no_display, out_fps=args.out_fps,
                  progress=not args.no_progress)
    print(format_summary(summary, label))
    if summary['json_error']:
        raise UserError('--json-dir %s: JSON output stopped (%s)' % (args.json_dir,
                                                                    summary['json_error']))
    if summary['frames'] == 0 and not summary['interrupted']:
        raise UserError('%s: no frame could be read (%d skipped)' % (source.name, summary['skipped']))
    return 130 if summary['interrupted'] else 0
