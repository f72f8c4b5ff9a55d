"""frame_loop.py with stand-in process callbacks (no network involved)."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from cli import UserError
import frame_loop as fl
from support.testing import REPO, one_line_error, read_video, run


def make_video(path, frames, fps=10.0):
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*fl.VIDEO_CODECS[os.path.splitext(path)[1]])
    vw = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()



def grey_frames(n, w=64, h=48):
    # modulo 256: NumPy 2 refuses out-of-range ints (NumPy 1.26 wrapped them the same way)
    return [np.full((h, w, 3), (20 + 30 * i) % 256, np.uint8) for i in range(n)]


def standin(frame):
    """Marks the frame (white square) and reports one 'person' whose every point is the mean grey."""
    out = frame.copy()
    cv2.rectangle(out, (20, 20), (40, 40), (255, 255, 255), -1)
    level = float(frame[frame.shape[0] - 2, frame.shape[1] - 2].mean())  # away from the square
    return out, fl.openpose_people([{'pose': np.full((18, 3), level)}])


def no_temp_files(folder):
    return [n for n in os.listdir(str(folder)) if n.startswith('.')] == []


def test_video_in_video_and_json_out(tmp_path, capsys):
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(6))
    out = tmp_path / 'out.mp4'
    jdir = tmp_path / 'json'
    summary = fl.run(fl.open_source(video=str(src)), standin, out=str(out), json_dir=str(jdir),
                     display=False)
    assert summary['frames'] == 6 and summary['skipped'] == 0 and summary['people'] == 6
    assert not summary['interrupted'] and summary['mean_fps'] > 0

    frames = read_video(out)
    assert len(frames) == 6
    assert frames[0].shape == (48, 64, 3)
    # the callback's drawing reached the video, and frames stay in order
    assert frames[3][30, 30].mean() > 200
    levels = [f[46, 62].mean() for f in frames]
    assert levels == sorted(levels)

    names = sorted(os.listdir(str(jdir)))
    assert names == ['clip_%012d_keypoints.json' % i for i in range(6)]
    for i, name in enumerate(names):
        data = json.load(open(str(jdir / name)))
        assert data['version'] == 1.3 and len(data['people']) == 1
        pts = np.array(data['people'][0]['pose_keypoints_2d']).reshape(18, 3)
        assert abs(pts[0, 0] - (20 + 30 * i)) < 6  # this frame's own result
        assert data['people'][0]['face_keypoints_2d'] == []
    assert no_temp_files(tmp_path) and no_temp_files(jdir)
    line = fl.format_summary(summary)
    assert line.startswith('done: 6 frames, 0 skipped, mean ') and '6 people found' in line


def test_folder_sorted_skips_non_images_and_fits_sizes(tmp_path, capsys):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    sizes = {'f2.png': (61, 45), 'f10.png': (80, 40), 'f1.png': (30, 30)}
    for i, (name, (w, h)) in enumerate(sorted(sizes.items())):
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 50 * (i + 1), np.uint8))
    (folder / 'notes.txt').write_text('not an image')
    (folder / '.hidden').write_text('ignored')
    (folder / 'sub').mkdir()
    out = tmp_path / 'out.avi'
    jdir = tmp_path / 'json'
    seen = []

    def process(frame):
        seen.append(frame.shape[:2])
        return frame.copy(), fl.openpose_people([])

    summary = fl.run(fl.open_source(images=str(folder)), process, out=str(out), json_dir=str(jdir),
                     display=False)
    err = capsys.readouterr().err
    assert 'notes.txt: not a readable image, skipped' in err
    assert summary['frames'] == 3 and summary['skipped'] == 1 and summary['people'] == 0
    # natural order: f1, f2, f10
    assert seen == [(30, 30), (45, 61), (40, 80)]
    assert sorted(os.listdir(str(jdir))) == ['f10_keypoints.json', 'f1_keypoints.json',
                                             'f2_keypoints.json']
    frames = read_video(out)
    assert len(frames) == 3 and all(f.shape == (30, 30, 3) for f in frames)


def test_odd_frame_size_padded_to_even_not_cropped(tmp_path):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    img = np.zeros((45, 61, 3), np.uint8)
    img[:, -1] = 255  # last column and row must survive
    img[-1, :] = 255
    cv2.imwrite(str(folder / 'a.png'), img)
    out = tmp_path / 'o.avi'
    fl.run(fl.open_source(images=str(folder)), lambda f: (f.copy(), fl.openpose_people([])),
           out=str(out), display=False)
    (frame,) = read_video(out)
    assert frame.shape == (46, 62, 3)
    assert frame[20, 60].mean() > 150 and frame[44, 30].mean() > 150


def test_damaged_video_frame_skipped_and_counted(tmp_path, capsys):
    src = tmp_path / 'clip.avi'  # MJPG: one JPEG per frame, so one frame can be damaged alone
    rng = np.random.RandomState(0)
    make_video(src, [rng.randint(0, 255, (48, 64, 3)).astype(np.uint8) for _ in range(6)])
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b'\xff\xd8\xff']
    assert len(starts) == 6
    data[starts[2]:starts[2] + 400] = bytes(400)  # wipe frame 2's JPEG header
    src.write_bytes(bytes(data))
    jdir = tmp_path / 'json'
    summary = fl.run(fl.open_source(video=str(src)), standin, json_dir=str(jdir), display=False)
    assert summary['frames'] == 5 and summary['skipped'] == 1
    assert 'skipped 1 unreadable frame(s) before frame 3' in capsys.readouterr().err
    # JSON names keep the frame's index in the video
    assert sorted(os.listdir(str(jdir))) == ['clip_%012d_keypoints.json' % i for i in (0, 1, 3, 4, 5)]


def test_bad_sources_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r'cannot open camera --device 99'):
        fl.open_source(device=99)
    with pytest.raises(UserError, match=r'missing\.mp4: video file not found'):
        fl.open_source(video=str(tmp_path / 'missing.mp4'))
    junk = tmp_path / 'junk.mp4'
    junk.write_bytes(b'this is no video')
    with pytest.raises(UserError, match=r'junk\.mp4: cannot open as a video'):
        fl.open_source(video=str(junk))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(UserError, match=r'empty: folder has no files'):
        fl.open_source(images=str(empty))
    with pytest.raises(UserError, match=r'nope: folder not found'):
        fl.open_source(images=str(tmp_path / 'nope'))
    with pytest.raises(UserError, match=r"unsupported video type '\.gif'"):
        fl.check_video_path(str(tmp_path / 'out.gif'))
    with pytest.raises(UserError, match=r'output directory .* does not exist'):
        fl.check_video_path(str(tmp_path / 'no' / 'out.mp4'))
    clip = tmp_path / 'clip.mp4'
    make_video(clip, grey_frames(2))
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    with pytest.raises(UserError, match=r'--json-dir .*a_file: exists and is not a folder'):
        fl.run(fl.open_source(video=str(clip)), standin, json_dir=str(a_file), display=False)


def test_no_display_falls_back_to_headless_with_one_notice(tmp_path, capsys, monkeypatch):
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(2))
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    summary = fl.run(fl.open_source(video=str(src)), standin, display=True, progress=False)
    assert summary['frames'] == 2
    err = capsys.readouterr().err
    assert err.count('note: ') == 1 and 'no display ($DISPLAY is not set); running headless' in err

    # The pinned opencv-python-headless has no GUI: a display is set but no window can open.
    assert 'GUI:                           NONE' in cv2.getBuildInformation()
    monkeypatch.setenv('DISPLAY', ':0')
    summary = fl.run(fl.open_source(video=str(src)), standin, display=True, progress=False)
    assert summary['frames'] == 2
    err = capsys.readouterr().err
    assert err.count('note: ') == 1 and 'no GUI support' in err and 'running headless' in err


def test_q_and_esc_quit(tmp_path, monkeypatch):
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(5))
    shown = []
    monkeypatch.setattr(fl, 'display_available', lambda: (True, None))
    monkeypatch.setattr(cv2, 'imshow', lambda name, img: shown.append(img.shape))
    monkeypatch.setattr(cv2, 'getWindowProperty', lambda *a: 1.0)
    monkeypatch.setattr(cv2, 'destroyWindow', lambda *a: None)
    for key in (ord('q'), 27):
        keys = iter([-1, -1, key, -1, -1, -1])
        monkeypatch.setattr(cv2, 'waitKey', lambda delay: next(keys))
        shown.clear()
        summary = fl.run(fl.open_source(video=str(src)), standin, display=True, progress=False)
        assert summary['quit'] and summary['frames'] == 3 and len(shown) == 3


def test_fps_is_drawn(tmp_path):
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(3))
    out = tmp_path / 'o.avi'
    fl.run(fl.open_source(video=str(src)), lambda f: (f.copy(), fl.openpose_people([])),
           out=str(out), display=False)
    frames = read_video(out)
    # no rate is known at the first frame; later frames carry the white "FPS" text top-left
    assert frames[0][5:30, 5:60].max() < 100
    assert frames[2][5:30, 5:60].max() > 200


def json_files(folder):
    """The finished JSON files (atomic writes use hidden temporary names until renamed)."""
    if not folder.exists():
        return []
    return [n for n in os.listdir(str(folder)) if not n.startswith('.')]


CHILD = r'''
import sys, time
sys.path.insert(0, %(repo)r)
import cli, frame_loop as fl

def slow(frame):
    time.sleep(0.15)
    return frame.copy(), fl.openpose_people([])

def main(argv):
    s = fl.run(fl.open_source(video=%(src)r), slow, out=%(out)r, json_dir=%(jdir)r,
               display=False, progress=False)
    print(fl.format_summary(s))
    return 130 if s['interrupted'] else 0

cli.run_main(main)
'''


def test_sigint_mid_run_leaves_a_playable_video(tmp_path):
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(60))
    out, jdir = tmp_path / 'out.mp4', tmp_path / 'json'
    script = tmp_path / 'child.py'
    script.write_text(CHILD % {'repo': REPO, 'src': str(src), 'out': str(out), 'jdir': str(jdir)})
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and len(json_files(jdir)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert '(interrupted)' in stdout and 'Traceback' not in stderr
    written = len(json_files(jdir))
    assert written == len(os.listdir(str(jdir)))  # no temporary file left behind
    assert 3 <= written < 60
    frames = read_video(out)
    # every frame with a JSON is in the video (the signal may land between the two writes)
    assert written <= len(frames) <= written + 1 and frames[0].shape == (48, 64, 3)
    assert no_temp_files(tmp_path)


class FakeCapture(object):
    """A camera for tests: scripted reads (a frame, or None for a failed capture)."""

    def __init__(self, script):
        self.script = list(script)
        self.settings = {}
        self.released = False

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.settings[prop] = value
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if not self.script:
            return False, None
        f = self.script.pop(0)
        return (f is not None), f

    def release(self):
        self.released = True


def test_camera_source_names_frames_by_number_and_survives_dropped_captures(tmp_path, monkeypatch,
                                                                         capsys):
    frames = grey_frames(4)
    fake = FakeCapture([frames[0], None, None, frames[1], frames[2], None, frames[3]])
    opened = []
    monkeypatch.setattr(cv2, 'VideoCapture', lambda dev: opened.append(dev) or fake)
    src = fl.open_source(device=3)
    assert opened == [3]
    assert (fake.settings[cv2.CAP_PROP_FRAME_WIDTH],
            fake.settings[cv2.CAP_PROP_FRAME_HEIGHT]) == (640, 480)
    jdir = tmp_path / 'json'
    summary = fl.run(src, standin, json_dir=str(jdir), display=False)
    # the camera then stops delivering: the run ends with a warning instead of hanging
    err = capsys.readouterr().err
    assert 'camera 3 stopped delivering frames' in err
    assert summary['frames'] == 4 and summary['skipped'] == 3 and fake.released
    assert sorted(os.listdir(str(jdir))) == ['%012d_keypoints.json' % i for i in range(4)]


def test_callbacks_get_each_frames_time(tmp_path, capsys):
    """process(frame, t): a video's own timestamps, a folder's frame numbers at --out-fps (else
    demo_out_fps); callbacks of one argument still work; the person dict's 'id' becomes
    person_id."""
    seen = []

    def timed(frame, t):
        seen.append(t)
        return frame, fl.openpose_people([{'pose': np.zeros((18, 3)), 'id': 7}])

    make_video(tmp_path / 'v.avi', grey_frames(4), fps=12.5)
    fl.run(fl.open_source(video=str(tmp_path / 'v.avi')), timed, json_dir=str(tmp_path / 'j'),
           display=False, progress=False)
    assert seen == pytest.approx([0.0, 0.08, 0.16, 0.24])
    data = json.load(open(str(tmp_path / 'j' / 'v_000000000000_keypoints.json')))
    assert data['people'][0]['person_id'] == [7]
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i, f in enumerate(grey_frames(3)):
        cv2.imwrite(str(folder / ('%d.png' % i)), f)
    for out_fps, dt in ((None, 1 / fl.params['demo_out_fps']), (25.0, 0.04)):
        seen.clear()
        fl.run(fl.open_source(images=str(folder)), timed, display=False, progress=False,
               out_fps=out_fps)
        assert seen == pytest.approx([0, dt, 2 * dt])
    s = fl.run(fl.open_source(images=str(folder)), lambda f: (f, fl.openpose_people([])),
               display=False, progress=False)
    assert s['frames'] == 3
    assert 'warning' not in capsys.readouterr().err


def test_timestamps_that_do_not_increase_warn_once(monkeypatch, capsys):
    class Source(object):
        kind, name, fps, total, skipped = 'video', 'clip.mp4', 30.0, None, 0

        def __iter__(self):
            for i in range(5):
                yield i, np.zeros((8, 8, 3), np.uint8)

        def close(self):
            pass
    stamps = iter([0.0, 0.1, 0.1, 0.05, 0.3])
    monkeypatch.setattr(fl, 'frame_time', lambda source, frame_no, rate: next(stamps))
    seen = []
    fl.run(Source(), lambda f, t: (seen.append(t) or f, fl.openpose_people([])),
           display=False, progress=False)
    assert seen == [0.0, 0.1, 0.1, 0.05, 0.3]  # passed on as they are (the tracker copes)
    err = capsys.readouterr().err
    assert err.count('warning: clip.mp4: frame 2 has timestamp 0.100 s, not after the '
                     "previous frame's 0.100 s") == 1 and err.count('warning') == 1


FULL_DISK_CHILD = r'''
import sys
sys.path.insert(0, %(repo)r)
import cli, frame_loop as fl

def main(argv):
    s = fl.run(fl.open_source(video=%(src)r), lambda f: (f.copy(), fl.openpose_people([])),
               out=%(out)r, json_dir=%(jdir)r, display=False, progress=False)
    print(fl.format_summary(s))

cli.run_main(main)
'''


def test_full_disk_video_is_an_error_not_a_success(tmp_path, small_disk):
    """The disk fills while the video is written: FFmpeg says nothing and the file is
    unplayable.  It said 'done ... video: out.mp4' with exit 0; now one error line, no video
    left behind, the JSON files (on another disk) kept."""
    rng = np.random.RandomState(1)
    src = tmp_path / 'clip.avi'  # noise: 40 frames make ~1 MB of mp4v, the disk holds 256 kB
    make_video(src, [rng.randint(0, 255, (240, 320, 3)).astype(np.uint8) for _ in range(40)])
    out, jdir = small_disk.path / 'out.mp4', tmp_path / 'json'
    script = tmp_path / 'child.py'
    script.write_text(FULL_DISK_CHILD % {'repo': REPO, 'src': str(src), 'out': str(out),
                                         'jdir': str(jdir)})
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       preexec_fn=small_disk.preexec)
    assert 'done:' not in r.stdout, (r.stdout, r.stderr)
    assert one_line_error(r, 'of 40 frames in the file').startswith(
        'error: --out %s: the video could not be written completely (' % out), r.stderr
    assert os.listdir(str(small_disk.path)) == []
    assert len(json_files(jdir)) == 40


def test_json_write_failure_keeps_the_video(tmp_path, capsys):
    """A JSON that cannot be written mid-video (here its name is taken by a folder) deleted
    the finished video; now the JSON output stops with one warning, the video is completed
    and kept, and the summary says so."""
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(8))
    out, jdir = tmp_path / 'out.mp4', tmp_path / 'json'

    def process(frame):
        if len(json_files(jdir)) == 3:
            (jdir / 'clip_000000000003_keypoints.json').mkdir()
        return standin(frame)
    summary = fl.run(fl.open_source(video=str(src)), process, out=str(out), json_dir=str(jdir),
                     display=False)
    err = capsys.readouterr().err
    assert 'clip_000000000003_keypoints.json: is a directory' in summary['json_error']
    assert err.count('no more JSON files are written') == 1
    assert summary['frames'] == 8 and len(read_video(out)) == 8
    assert sorted(json_files(jdir))[:3] == ['clip_%012d_keypoints.json' % i for i in range(3)]
    assert len(json_files(jdir)) == 4  # three files and the folder in the way
    assert fl.format_summary(summary).endswith('; video: %s; JSON output stopped' % out)


def test_image_over_the_pixel_limit_is_skipped_not_fatal(tmp_path, capsys):
    """A PNG declaring 40000 x 40000 pixels (over OpenCV's 2^30) aborted the folder run with a
    cv2.error and lost the video; now it is skipped, counted, and the video kept."""
    import struct
    import zlib
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for i in (1, 3):
        cv2.imwrite(str(folder / ('f%d.png' % i)), np.full((40, 60, 3), 60 * i, np.uint8))

    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    (folder / 'f2.png').write_bytes(
        b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 40000, 40000, 8, 2, 0, 0, 0))
        + chunk(b'IDAT', zlib.compress(bytes(120001))) + chunk(b'IEND', b''))
    out = tmp_path / 'out.avi'
    summary = fl.run(fl.open_source(images=str(folder)), standin, out=str(out), display=False)
    err = capsys.readouterr().err
    assert summary['frames'] == 2 and summary['skipped'] == 1
    assert 'f2.png: not a readable image, skipped (image over the 1073741824-pixel limit' in err
    assert len(read_video(out)) == 2


def test_folder_images_are_read_as_a_viewer_shows_them(tmp_path):
    """--images and the still-image tools read through one function: an EXIF-rotated phone
    photo arrives upright, 16-bit PNGs as read_image converts them."""
    import image_io
    from support.testing import jpeg_with_orientation
    folder = tmp_path / 'imgs'
    folder.mkdir()
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = (0, 0, 255)  # red band on the left of the stored pixels
    jpeg = cv2.imencode('.jpg', img)[1].tobytes()
    (folder / 'a.jpg').write_bytes(jpeg_with_orientation(jpeg, 6))
    deep = (np.arange(48 * 64 * 3).reshape(48, 64, 3) * 41 % 65536).astype(np.uint16)
    cv2.imwrite(str(folder / 'b.png'), deep)
    got = [frame for _, frame, _ in fl.open_source(images=str(folder))]
    assert got[0].shape == (80, 40, 3) and got[0][:20, :, 2].mean() > 200  # band now on top
    for frame, name in zip(got, ('a.jpg', 'b.png')):
        assert np.array_equal(frame, image_io.read_image(str(folder / name)))


def test_out_fps_limits_refused_up_front(tmp_path):
    """--out-fps inf made OpenCV's writer spin forever, deaf to SIGINT and SIGTERM; now it and
    the other rates OpenCV cannot write are one error line, in seconds, before any frame."""
    src = tmp_path / 'clip.mp4'
    make_video(src, grey_frames(3))
    for fps in ('inf', 'nan', '0', '-5', '1e6', '0.001'):
        r = run('camera_pose_demo.py', '--video', src, '--out', tmp_path / 'o.mp4', '--out-fps',
                fps, '--no-display', timeout=60)
        assert one_line_error(r, 'between 0.01 and 600').startswith('error: --out-fps '), r.stderr
    assert os.listdir(str(tmp_path)) == ['clip.mp4']
    with pytest.raises(UserError, match='--out-fps inf'):
        fl.run(fl.open_source(video=str(src)), standin, out=str(tmp_path / 'o.mp4'),
               out_fps=float('inf'), display=False)


def test_ffmpeg_lines_are_not_shown(tmp_path, capfd):
    """A damaged frame made FFmpeg print '[mjpeg @ 0x...] ...' beside our warning."""
    src = tmp_path / 'clip.avi'
    rng = np.random.RandomState(0)
    make_video(src, [rng.randint(0, 255, (48, 64, 3)).astype(np.uint8) for _ in range(4)])
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b'\xff\xd8\xff']
    data[starts[1]:starts[1] + 400] = bytes(400)
    src.write_bytes(bytes(data))
    capfd.readouterr()
    fl.run(fl.open_source(video=str(src)), standin, out=str(tmp_path / 'o.mkv'), display=False,
           progress=False)
    err = capfd.readouterr().err
    assert err == 'warning: %s: skipped 1 unreadable frame(s) before frame 2\n' % src, err
