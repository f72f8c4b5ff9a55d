"""Chainer 7.8.1 (its last release) on today's NumPy, OpenCV and CuPy.

Import this module before ``chainer`` (every script and ``models/`` do).  Each
shim below restores one name that a newer library removed, only when the
running stack lacks it, so on the pinned stack (NumPy 1.26, OpenCV 4.10,
CuPy 13) importing this changes nothing.  ``opencv_log_level`` is the one
OpenCV call whose home moved in OpenCV 5.
"""
import contextlib
import importlib.util
import os
import sys
import types
import warnings

import numpy

# The oldest versions the code is tested with, and the range Chainer 7.8.1 runs in.
MIN_PYTHON = (3, 11)
MIN_NUMPY = (1, 26)


def _version_tuple(text):
    parts = []
    for piece in text.split('.')[:2]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def stack_problem():
    """Return one line naming what to install when this stack cannot run, else None."""
    if sys.version_info[:2] < MIN_PYTHON:
        return ('Python %d.%d is too old: this project needs Python 3.11-3.13 '
                '(run `make demo`, which builds .venv)' % sys.version_info[:2])
    if _version_tuple(numpy.__version__) < MIN_NUMPY:
        return ('NumPy %s is too old: pip install "numpy>=1.26"' % numpy.__version__)
    if importlib.util.find_spec('chainer') is None:
        return ('Chainer is not installed: pip install --no-build-isolation chainer==7.8.1 '
                '(or run `make demo`, which builds .venv)')
    if importlib.util.find_spec('pkg_resources') is None:
        # chainer/_environment_check.py imports it; setuptools 81 removed it.
        return ('Chainer 7.8.1 needs pkg_resources, which setuptools 81 removed: '
                'pip install "setuptools<81"')
    return None


_problem = stack_problem()
if _problem:
    # Before any traceback from inside Chainer: one line naming what to install.
    sys.stderr.write('error: %s\n' % _problem)
    raise SystemExit(2)

# NumPy 2 removed ``np.sctypes``; chainer/functions/array/as_strided.py reads it at import.
if 'sctypes' not in numpy.__dict__:
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
        'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
        'others': [bool, object, bytes, str, numpy.void],
    }


def _numpy_distutils_missing():
    try:
        return importlib.util.find_spec('numpy.distutils') is None
    except (ImportError, ValueError):
        return True


# numpy.distutils is gone from NumPy 2 on Python 3.12+; chainer/_environment_check.py
# imports numpy.distutils.system_info and calls get_info('blas_opt') on macOS only.
if 'numpy.distutils' not in sys.modules and _numpy_distutils_missing():
    _distutils = types.ModuleType('numpy.distutils')
    _system_info = types.ModuleType('numpy.distutils.system_info')
    _system_info.get_info = lambda name, notfound_action=0: {}
    _distutils.system_info = _system_info
    sys.modules['numpy.distutils'] = _distutils
    sys.modules['numpy.distutils.system_info'] = _system_info

# setuptools 80 warns on `import pkg_resources`, which chainer/_environment_check.py does
# at import; the warning would break the one-line error output of every script.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)


def _cupy_major():
    for name in ('cupy', 'cupy-cuda13x', 'cupy-cuda12x', 'cupy-cuda11x'):
        try:
            from importlib.metadata import version
            return int(version(name).split('.')[0])
        except Exception:
            continue
    return None


# CuPy 14 ships no cuDNN bindings; Chainer then warns "cuDNN is not enabled" on the first
# GPU use and runs its own kernels anyway.  Say "no cuDNN" up front (the user's own
# CHAINER_CUDNN wins) so --gpu runs print no warning.  Cheap: reads package metadata only.
if 'CHAINER_CUDNN' not in os.environ and importlib.util.find_spec('cupy') is not None:
    _major = _cupy_major()
    if _major is not None and _major >= 14:
        os.environ['CHAINER_CUDNN'] = '0'


def opencv_log_level(level):
    """Set OpenCV's log level (0 = silent); return the previous one.

    OpenCV 4 has ``cv2.setLogLevel``; OpenCV 5 moved it to ``cv2.utils.logging``.
    """
    import cv2
    setter = getattr(cv2, 'setLogLevel', None)
    if setter is None:
        setter = cv2.utils.logging.setLogLevel
    return setter(level)


@contextlib.contextmanager
def opencv_quiet():
    """Silence OpenCV's own log lines for a call whose failure the caller reports in one
    line (V4L2's "can't open camera by index"; OpenCV 4.11+'s PNG decoder prints
    "[ WARN ...] read_chunk ..." and "[ERROR ...] readHeader ..." on a corrupt file)."""
    old = opencv_log_level(0)
    try:
        yield
    finally:
        opencv_log_level(old)


def cv2_dnn_missing(name):
    """One line saying that this OpenCV lacks ``cv2.dnn.<name>`` (OpenCV 5 removed
    ``readNetFromCaffe`` and ``readNetFromTensorflow``, the tests' and benches' independent
    reference), or None when it has it."""
    import cv2
    if hasattr(cv2.dnn, name):
        return None
    return ('OpenCV %s has no cv2.dnn.%s (OpenCV 5 removed it), the reference this compares '
            'with: run it with OpenCV 4.x, e.g. pip install opencv-python-headless==4.14.0.94'
            % (cv2.__version__, name))
