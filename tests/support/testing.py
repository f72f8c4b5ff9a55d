"""Helpers every test module shares: where the test data is, running a script, the
one-line-error check, and small builders (videos, EXIF, device nodes, a full disk).

Test data comes from two places:

* ``tests/data`` (``data_path``): shipped with the repository, licence-clean (COCO
  images and annotations, the tf-pose graphs; licences in the READMEs beside them);
* ``../shared/data`` (``shared_path``; ``$POSE_SHARED_DIR/data`` if set): files the
  repository may not redistribute (DeNA's demo images, CMU's prototxts).  Without it a
  test that needs one skips, naming the file; with ``POSE_REQUIRE_SHARED=1`` (CI) it
  fails instead, so that nothing there is skipped unnoticed.
"""
import os
import re
import subprocess
import sys

import pytest

import compat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_DATA = os.path.join(REPO, 'tests', 'data')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
SHARED = os.environ.get('POSE_SHARED_DIR', os.path.join(os.path.dirname(REPO), 'shared'))
SHARED_DATA = os.path.join(SHARED, 'data')
REQUIRE_SHARED = os.environ.get('POSE_REQUIRE_SHARED', '') not in ('', '0')
# the start of every skip reason of shared_path (conftest counts these skips)
SHARED_SKIP = 'needs ../shared/data/'

# OpenCV 5 removed cv2.dnn's Caffe and TensorFlow importers, the independent reference of
# the tests marked with these; both stacks' requirements keep OpenCV 4.x.
needs_cv2_caffe = pytest.mark.skipif(compat.cv2_dnn_missing('readNetFromCaffe') is not None,
                                     reason=str(compat.cv2_dnn_missing('readNetFromCaffe')))
needs_cv2_tensorflow = pytest.mark.skipif(
    compat.cv2_dnn_missing('readNetFromTensorflow') is not None,
    reason=str(compat.cv2_dnn_missing('readNetFromTensorflow')))


def data_path(*parts):
    """Path of a file shipped under tests/data (it must exist: a missing one is a bug)."""
    path = os.path.join(TEST_DATA, *parts)
    assert os.path.exists(path), 'shipped test data missing: %s' % path
    return path


def coco_mini(*parts):
    """tests/data/coco_mini: four COCO val2017 images and their person annotations."""
    return data_path('coco_mini', *parts)


def tfpose_pb(fixed=False):
    """tf-pose's mobilenet_v2_small graph; ``fixed``: its 432x368 variant for cv2.dnn."""
    return data_path('tfpose', 'tfpose_mobilenet_v2_small%s.pb' % ('_fixed432x368' if fixed
                                                                   else ''))


def shared_path(*parts):
    """Path of a file under ../shared/data; absent, the test skips (fails in CI mode)."""
    __tracebackhide__ = True  # the skip is reported at the test's line, not here
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        why = ('%s%s (not in the repository: lay ../shared beside the clone or set '
               'POSE_SHARED_DIR)' % (SHARED_SKIP, '/'.join(parts)))
        if REQUIRE_SHARED:
            pytest.fail('POSE_REQUIRE_SHARED is set but the test ' + why)
        pytest.skip(why)
    return path


def haar_cascade():
    """OpenCV's frontal-face Haar cascade as shipped with OpenCV (cv2.data); the copy in
    ../shared where this OpenCV has none (OpenCV 5 moved them to opencv-contrib)."""
    __tracebackhide__ = True
    import cv2
    from entity import params
    base = getattr(getattr(cv2, 'data', None), 'haarcascades', None)
    if base and os.path.exists(os.path.join(base, params['face_cascade_file'])):
        return os.path.join(base, params['face_cascade_file'])
    return shared_path('models', params['face_cascade_file'])


def run(script, *args, cwd=REPO, timeout=300, **kw):
    """Run the repository's ``script`` (a path relative to the repository) with this
    Python and ``args`` (str() of each); the finished ``CompletedProcess`` with text
    stdout and stderr.  ``kw`` goes to ``subprocess.run`` (``env``, ``preexec_fn``)."""
    return subprocess.run([sys.executable, os.path.join(REPO, script)] + [str(a) for a in args],
                          cwd=str(cwd), capture_output=True, text=True, timeout=timeout, **kw)


# a line of tqdm's progress bar on stderr (it redraws with \r: blank lines too)
_PROGRESS = re.compile(r'\s*$|\s*\d+%\|')


def one_line_error(r, *words, notes_first=False):
    """``r`` (a finished command) failed as every CLI here must: exit status 2, no
    traceback, and one ``error: ...`` line on stderr holding each of ``words``.
    ``notes_first``: ``note: ...`` / ``warning: ...`` lines and tqdm's progress bar (blank
    or ``NN%|`` lines) may come before it (the camera demos' "no display" note, a folder's
    unreadable files).  Returns the error line."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith('error: '), r.stderr
    if notes_first:
        assert all(ln.startswith(('note: ', 'warning: ')) or _PROGRESS.match(ln)
                   for ln in lines[:-1]), r.stderr
    else:
        assert len(lines) == 1, r.stderr
    for w in words:
        assert str(w) in lines[-1], (w, lines[-1])
    return lines[-1]


def read_video(path):
    """Every frame of a video file (BGR arrays); fails if the file does not open."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


SMALL_DISK_BYTES = 256 * 1024


class SmallDisk(object):
    """A folder (``path``) on a file system that is full after ``SMALL_DISK_BYTES``.

    Where this user may mount (root), a tmpfs of that size: writes past it fail with
    ENOSPC, as on a real full disk.  Elsewhere the limit is RLIMIT_FSIZE, set in the
    subprocesses started with ``preexec_fn=small_disk.preexec``: any file written past that
    size fails with EFBIG (Python ignores SIGXFSZ, so the write returns the error)."""

    def __init__(self, path):
        self.path = path
        path.mkdir()
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d' % SMALL_DISK_BYTES, 'tmpfs',
                            str(path)], capture_output=True)
        self.mounted = r.returncode == 0

    def preexec(self):
        if not self.mounted:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (SMALL_DISK_BYTES, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    def close(self):
        if self.mounted:
            subprocess.run(['umount', '-l', str(self.path)], capture_output=True)


def jpeg_with_orientation(jpeg, orientation):
    """JPEG bytes with an EXIF APP1 segment holding ``orientation`` (tag 0x0112) inserted
    after SOI, as a phone writes it (6: the stored pixels are shown turned 90 degrees
    clockwise)."""
    import struct
    ifd = (struct.pack('<H', 1) + struct.pack('<HHII', 0x0112, 3, 1, orientation)
           + struct.pack('<I', 0))
    payload = b'Exif\x00\x00' + b'II*\x00' + struct.pack('<I', 8) + ifd
    assert jpeg[:2] == b'\xff\xd8'
    return jpeg[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload + jpeg[2:]


def full_device(path):
    """A character device node at ``path`` with /dev/full's numbers (1, 7): writing it fails
    with ENOSPC, replacing it destroys it.  Creating one needs root (CAP_MKNOD)."""
    import stat
    try:
        os.mknod(str(path), stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip('creating a device node needs root')
    return path
