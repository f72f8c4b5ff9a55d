"""Fixtures shared by the test modules, the test run's environment and its summary of
the tests skipped for want of ../shared (helpers: tests/support/testing.py)."""
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import compat  # noqa: E402,F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import atexit  # noqa: E402

import pytest  # noqa: E402

from support import testing  # noqa: E402

# C kernels (models/_native.py) are built for this run in a temporary cache, not the
# user's ~/.cache; scripts the tests start inherit it.
if 'POSE_NATIVE_CACHE' not in os.environ:
    os.environ['POSE_NATIVE_CACHE'] = tempfile.mkdtemp(prefix='pose-native-')
    atexit.register(shutil.rmtree, os.environ['POSE_NATIVE_CACHE'], True)


def pytest_sessionstart(session):
    if testing.REQUIRE_SHARED and not os.path.isdir(testing.SHARED_DATA):
        raise pytest.UsageError('POSE_REQUIRE_SHARED is set but %s does not exist'
                                % testing.SHARED_DATA)


def pytest_terminal_summary(terminalreporter):
    """One line counting the tests skipped because ../shared/data is absent."""
    n = sum(1 for rep in terminalreporter.stats.get('skipped', [])
            if isinstance(rep.longrepr, tuple) and testing.SHARED_SKIP in str(rep.longrepr[2]))
    if n:
        terminalreporter.write_line(
            '%d test%s skipped: they need files under %s that the repository may not '
            'redistribute (DeNA demo images, CMU prototxts); CI runs them'
            % (n, '' if n == 1 else 's', testing.SHARED_DATA), yellow=True, bold=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = testing.SmallDisk(tmp_path / 'small_disk')
    yield disk
    disk.close()


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory):
    """A tiny COCO 2017 directory (train: the 4 coco_mini images, val: 2) with ignore masks;
    one per test module, which may change it."""
    from support.coco_mini import make_coco_dir_with_masks
    return make_coco_dir_with_masks(str(tmp_path_factory.mktemp('coco')))


@pytest.fixture(scope='module')
def face_npz(tmp_path_factory):
    """Random FaceNet weights whose every map has a peak (support.keypoint_nets)."""
    from models.FaceNet import FaceNet
    from support.keypoint_nets import save_peaked_net
    return save_peaked_net(FaceNet, tmp_path_factory.mktemp('facenet') / 'facenet.npz')


@pytest.fixture(scope='module')
def hand_npz(tmp_path_factory):
    """Random HandNet weights whose every map has a peak (support.keypoint_nets)."""
    from models.HandNet import HandNet
    from support.keypoint_nets import save_peaked_net
    return save_peaked_net(HandNet, tmp_path_factory.mktemp('handnet') / 'handnet.npz')
