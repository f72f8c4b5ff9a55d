"""compat.py: Chainer 7.8.1 on both stacks, OpenCV 4 and 5, and one line naming what to
install on a stack the project does not support (each case made in a child process)."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from support.testing import REPO, one_line_error
import compat


def run_python(code, *args):
    return subprocess.run([sys.executable, '-c', code] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('setup,needs', [
    ('sys.modules["chainer"] = None',
     'Chainer is not installed: pip install --no-build-isolation chainer==7.8.1'),
    ('sys.modules["pkg_resources"] = None',  # as with setuptools 81+
     'Chainer 7.8.1 needs pkg_resources, which setuptools 81 removed: '
     'pip install "setuptools<81"'),
    ('import numpy; numpy.__version__ = "1.24.4"',
     'NumPy 1.24.4 is too old: pip install "numpy>=1.26"'),
    ('sys.version_info = (3, 10, 14)', 'Python 3.10 is too old: this project needs Python '
                                       '3.11-3.13'),
])
def test_unsupported_stack_is_one_line(tmp_path, setup, needs):
    """A real entry point (pose_detector.py, run as its own script would be) stops before
    any traceback with one line naming what to install, exit status 2."""
    code = ('import runpy, sys\n%s\nsys.argv = ["pose_detector.py", "--img", "x.jpg"]\n'
            'runpy.run_path("pose_detector.py", run_name="__main__")' % setup)
    r = run_python(code)
    assert one_line_error(r).startswith('error: ' + needs), r.stderr
    assert compat.stack_problem() is None  # this stack is fine


def test_chainer_imports_and_runs_with_the_shims():
    """On this stack (either), Chainer imports with compat first without a word on stderr
    (which would break the scripts' one-line errors) and computes: a 3x3 convolution equals
    the sums of the zero-padded input's windows."""
    code = ('import compat, chainer, chainer.functions as F, numpy as np\n'
            'x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)\n'
            'y = F.convolution_2d(x, np.ones((1, 2, 3, 3), np.float32), pad=1)\n'
            'print(chainer.__version__, *y.array.ravel().tolist())')
    r = run_python(code)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    version, *values = r.stdout.split()
    padded = np.pad(np.arange(24.).reshape(2, 3, 4), ((0, 0), (1, 1), (1, 1)))
    want = [padded[:, i:i + 3, j:j + 3].sum() for i in range(3) for j in range(4)]
    assert version == '7.8.1' and [float(v) for v in values] == want


def test_opencv_log_level_on_this_opencv():
    """OpenCV 4's cv2.setLogLevel or OpenCV 5's cv2.utils.logging: set, read back, restore."""
    previous = compat.opencv_log_level(0)
    try:
        assert compat.opencv_log_level(3) == 0
    finally:
        compat.opencv_log_level(previous)


def test_cv2_dnn_missing():
    assert compat.cv2_dnn_missing('readNet') is None  # in OpenCV 4 and 5
    line = compat.cv2_dnn_missing('readNetFromNothing')
    assert line.startswith('OpenCV %s has no cv2.dnn.readNetFromNothing' % cv2.__version__)
    assert 'opencv-python-headless==4.14.0.94' in line and '\n' not in line
