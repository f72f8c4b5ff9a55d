"""Shared test fixtures: paths to ../shared data and the repository root."""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import atexit
import os
import shutil
import sys
import tempfile

import cv2
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('POSE_SHARED_DIR', os.path.join(os.path.dirname(REPO), 'shared'))
SHARED_DATA = os.path.join(SHARED, 'data')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')

if REPO not in sys.path:
    sys.path.insert(0, REPO)

# C kernels (models/_native.py) are built for this run in a temporary cache, not the
# user's ~/.cache; scripts the tests start inherit it.
if 'POSE_NATIVE_CACHE' not in os.environ:
    os.environ['POSE_NATIVE_CACHE'] = tempfile.mkdtemp(prefix='pose-native-')
    atexit.register(shutil.rmtree, os.environ['POSE_NATIVE_CACHE'], True)


# OpenCV 5 removed cv2.dnn's Caffe and TensorFlow importers, the independent reference of
# the tests marked with these; both stacks' requirements keep OpenCV 4.x.
needs_cv2_caffe = pytest.mark.skipif(compat.cv2_dnn_missing('readNetFromCaffe') is not None,
                                     reason=str(compat.cv2_dnn_missing('readNetFromCaffe')))
needs_cv2_tensorflow = pytest.mark.skipif(
    compat.cv2_dnn_missing('readNetFromTensorflow') is not None,
    reason=str(compat.cv2_dnn_missing('readNetFromTensorflow')))


def shared_path(*parts):
    """Path under ../shared/data; the test fails (not skips) when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.fail('shared test data missing: %s (CI lays ../shared beside the clone)' % path)
    return path


@pytest.fixture
def shared():
    return shared_path


def read_video(path):
    """Every frame of a video file (BGR arrays); fails if the file does not open."""
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


def error_last_line(r, text):
    """A finished command failed as a CLI should: exit 2, its last stderr line is our
    one-line ``error:`` naming ``text``, no traceback (warnings may come before it, e.g.
    the camera demos' "no display" line)."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith('error: ') and text in lines[-1], r.stderr
    assert 'Traceback' not in r.stderr


SMALL_DISK_BYTES = 256 * 1024


class SmallDisk(object):
    """A folder (``path``) on a file system that is full after ``SMALL_DISK_BYTES``.

    Where this user may mount (root), a tmpfs of that size: writes past it fail with
    ENOSPC, as on a real full disk.  Elsewhere the limit is RLIMIT_FSIZE, set in the
    subprocesses started with ``preexec_fn=small_disk.preexec``: any file written past that
    size fails with EFBIG (Python ignores SIGXFSZ, so the write returns the error)."""

    def __init__(self, path):
        import subprocess
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
            import subprocess
            subprocess.run(['umount', '-l', str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / 'small_disk')
    yield disk
    disk.close()


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
