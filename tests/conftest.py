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
