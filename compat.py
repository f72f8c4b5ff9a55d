"""Chainer 7.8.1 (its last release) on today's NumPy, OpenCV and CuPy.

Import this module before ``chainer`` (every script and ``models/`` do).  Each
shim below restores one name that a newer library removed, only when the
running stack lacks it, so on the pinned stack (NumPy 1.26, OpenCV 4.10,
CuPy 13) importing this changes nothing.  ``opencv_log_level`` is the one
OpenCV call whose home moved in OpenCV 5.  ``restart_with_fitting_kernels`` gives
NumPy's bundled OpenBLAS the kernels that fit the CPU.
"""
import contextlib
import ctypes
import glob
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


# ----------------------------------------------------------------------------- OpenBLAS kernels
# NumPy's bundled OpenBLAS picks its kernel set ("core") when it loads, and some builds pick
# a generic one on CPUs with AVX2/AVX-512: every command (cli.run_main) checks this first and
# restarts itself once with the kernels that fit.  models/_blas.py binds the same library.

# (symbol prefix, suffix, BLAS int) of the OpenBLAS builds NumPy's wheels bundle: NumPy 2's
# scipy-openblas prefixes every symbol (scipy_cblas_sgemm64_), NumPy 1.26's does not
# (cblas_sgemm64_); both are ILP64 (suffix 64_).  The plain LP64 names cover other builds.
_NAMINGS = (('scipy_', '64_', ctypes.c_int64), ('', '64_', ctypes.c_int64),
            ('', '', ctypes.c_int))
_OPENBLAS = []  # [(ctypes.CDLL, prefix, suffix, int type)] or [None] once looked for


def openblas():
    """``(library, symbol prefix, symbol suffix, ctypes int type)`` of NumPy's bundled
    OpenBLAS, or None where NumPy has none (another NumPy build)."""
    if not _OPENBLAS:
        _OPENBLAS.append(_find_openblas())
    return _OPENBLAS[0]


def _find_openblas(paths=None):
    if paths is None:
        here = os.path.dirname(numpy.__file__)
        paths = sorted(glob.glob(os.path.join(here, '..', 'numpy.libs', '*openblas*'))  # Linux
                       + glob.glob(os.path.join(here, '.dylibs', '*openblas*')))  # macOS wheels
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_t in _NAMINGS:
            if hasattr(lib, prefix + 'cblas_sgemm' + suffix):
                return lib, prefix, suffix, int_t
    return None


def openblas_core(found=None):
    """The kernel set ("core") NumPy's OpenBLAS (or ``found``) runs, e.g. ``'Haswell'``, or
    None."""
    found = found or openblas()
    if found is None:
        return None
    lib, prefix, suffix, _ = found
    fn = getattr(lib, prefix + 'openblas_get_corename' + suffix, None)
    if fn is None:
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode()


# OpenBLAS's x86-64 cores (OPENBLAS_CORETYPE names, lower case) whose SGEMM kernels use
# AVX2+FMA or AVX-512.  Any other core it may pick (Prescott, Core2, Nehalem, Sandybridge,
# Barcelona, ...) runs SSE or AVX kernels: 2-3x slower convolutions on a CPU that has more.
_AVX512_CORES = {'skylakex', 'cooperlake', 'sapphirerapids'}
_AVX2_CORES = {'haswell', 'zen'} | _AVX512_CORES
# What OpenBLAS's SkylakeX kernels execute (its own detection asks for the same set).
_AVX512_FLAGS = {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}


def cpu_flags(path='/proc/cpuinfo'):
    """The CPU's feature flags (Linux), or an empty set where there is no such file."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def fitting_coretype(core, flags):
    """The ``OPENBLAS_CORETYPE`` to ask for when OpenBLAS picked ``core`` on a CPU with
    ``flags``: ``'SkylakeX'`` (``'Cooperlake'`` with bf16) when it has AVX-512 and
    ``'Haswell'`` when it has AVX2 and FMA, but only when ``core`` is a generic one that
    uses neither; else None (``core`` already fits, is unknown, or the CPU is not x86)."""
    if not core:
        return None
    core = core.lower()
    if core in _AVX2_CORES:
        return None
    if _AVX512_FLAGS <= flags:
        return 'Cooperlake' if 'avx512_bf16' in flags else 'SkylakeX'
    if {'avx2', 'fma'} <= flags:
        return 'Haswell'
    return None


def blas_restart(environ, core, flags):
    """``(coretype, message)`` when the process should restart with
    ``OPENBLAS_CORETYPE=coretype``, else None.  Never when the user set the variable (which
    a restart also does, so it happens once) or ``POSE_BLAS_AUTO=0``."""
    if environ.get('POSE_BLAS_AUTO', '1') == '0' or environ.get('OPENBLAS_CORETYPE'):
        return None
    coretype = fitting_coretype(core, flags)
    if coretype is None:
        return None
    return coretype, ('NumPy\'s OpenBLAS picked its generic %s kernels on this %s CPU: '
                      'restarting with OPENBLAS_CORETYPE=%s (POSE_BLAS_AUTO=0 keeps %s)'
                      % (core, 'AVX-512' if coretype != 'Haswell' else 'AVX2', coretype, core))


def restart_with_fitting_kernels():
    """Re-execute this command line with the OpenBLAS core that fits the CPU, when
    ``blas_restart`` says so (one line on stderr); else return.  Called by the scripts
    before any heavy work: OpenBLAS reads ``OPENBLAS_CORETYPE`` only when it loads."""
    argv = getattr(sys, 'orig_argv', None)
    if not argv or sys.argv[0] in ('', '-'):
        return  # interactive or a script on stdin: nothing to re-run
    decision = blas_restart(os.environ, openblas_core(), cpu_flags())
    if decision is None:
        return
    coretype, message = decision
    # Under mpiexec every rank restarts (MPI starts only in main, after this); one says so.
    if os.environ.get('OMPI_COMM_WORLD_RANK', os.environ.get('PMI_RANK', '0')) == '0':
        sys.stderr.write('note: %s\n' % message)
        sys.stderr.flush()
    sys.stdout.flush()
    env = dict(os.environ, OPENBLAS_CORETYPE=coretype)
    # argv[0] as the interpreter's path: a bare "python" would be searched on PATH again.
    os.execve(sys.executable, [sys.executable] + list(argv[1:]), env)
