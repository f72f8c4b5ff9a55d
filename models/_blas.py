"""``C = A @ B + beta * C`` on strided float32 views, through the BLAS NumPy itself uses.

``numpy.matmul`` cannot accumulate into its output (BLAS ``beta = 1``) and copies any
operand whose rows are not contiguous in memory.  The CPU convolutions of ``_fast.py``
need both: a KxK convolution is KxK GEMMs, one per kernel tap, each reading the padded
input *in place* at an offset (rows = channels, stride H*W) and adding into the same output
(measured on the 2-core CI machine: the 7x7 layers of the body net 119-125 -> 141-165
GFLOP/s, no im2col copies and no ``out += tmp`` passes).

``gemm`` calls ``cblas_sgemm`` of the OpenBLAS bundled in NumPy's wheel (found next to
NumPy, loaded once with ctypes; the same library and thread pool NumPy uses).  Where there
is none (another NumPy build), ``gemm`` falls back on ``numpy.matmul`` with the same
results (slower; ``tests/test_fast_path.py`` runs both).
"""
import contextlib
import ctypes
import functools
import glob
import os
import sys
import threading

import numpy

_ROW_MAJOR, _NO_TRANS = 101, 111
# (symbol prefix, suffix, BLAS int) of the OpenBLAS builds NumPy's wheels bundle: NumPy 2's
# scipy-openblas prefixes every symbol (scipy_cblas_sgemm64_), NumPy 1.26's does not
# (cblas_sgemm64_); both are ILP64 (suffix 64_).  The plain LP64 names cover other builds.
_NAMINGS = (('scipy_', '64_', ctypes.c_int64), ('', '64_', ctypes.c_int64),
            ('', '', ctypes.c_int))
_LIB = []  # [(cblas_sgemm, int type)] or [None] once looked for
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


def _find_sgemm(found):
    """``(cblas_sgemm, ctypes int type)`` of an ``openblas()`` result, or None."""
    if found is None:
        return None
    lib, prefix, suffix, int_t = found
    fn = getattr(lib, prefix + 'cblas_sgemm' + suffix)
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, int_t, int_t, int_t,
                   ctypes.c_float, ctypes.c_void_p, int_t, ctypes.c_void_p, int_t,
                   ctypes.c_float, ctypes.c_void_p, int_t]
    return fn, int_t


def sgemm():
    """The bound ``cblas_sgemm`` (and its int type), or None where NumPy has no OpenBLAS."""
    if not _LIB:
        _LIB.append(_find_sgemm(openblas()))
    return _LIB[0]


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


def _threads_fns():
    """``(openblas_get_num_threads, openblas_set_num_threads)`` of NumPy's OpenBLAS, or
    None."""
    found = openblas()
    if found is None:
        return None
    lib, prefix, suffix, _ = found
    get = getattr(lib, prefix + 'openblas_get_num_threads' + suffix, None)
    put = getattr(lib, prefix + 'openblas_set_num_threads' + suffix, None)
    if get is None or put is None:
        return None
    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
    return get, put


_THREADS = []  # [(get, set)] or [None] once looked for
_POOL = []  # [concurrent.futures.ThreadPoolExecutor] once made
# Fewer output columns per thread than this: one thread does it all (hand-offs cost more).
PARALLEL_MIN_COLS = 256


def _threads():
    if not _THREADS:
        _THREADS.append(_threads_fns())
    return _THREADS[0]


_OWN_THREADS = []  # inside ``own_threads``: the BLAS thread count it took over


@contextlib.contextmanager
def own_threads():
    """Run the block with single-threaded BLAS, its threads left to ``parallel_cols``.

    OpenBLAS hands every call to its threads and waits for them, so a convolution made of
    thousands of small GEMMs waits thousands of times for a thread to be scheduled, which
    on a loaded machine costs more than the GEMMs (measured on the 2-core machine under
    load from other processes: the body net at 368x656 took 22 s with OpenBLAS's two
    threads, 4.4 s with one); ``parallel_cols`` meets its threads once per loop instead.
    """
    fns = _threads()
    if fns is None or _OWN_THREADS:
        yield
        return
    threads = fns[0]()
    fns[1](1)
    _OWN_THREADS.append(threads)
    try:
        yield
    finally:
        _OWN_THREADS.pop()
        fns[1](threads)


_IN_PARALLEL = threading.local()  # .on: this thread runs a part of a parallel_cols call


def _in_parallel(fn, lo, hi):
    _IN_PARALLEL.on = True
    try:
        fn(lo, hi)
    finally:
        _IN_PARALLEL.on = False


def parallel_cols(m, fn):
    """Call ``fn(lo, hi)`` for contiguous ranges of ``range(m)`` (output columns: each
    thread's GEMMs read their own columns of the big operand, which BLAS packs once), one per
    BLAS thread, each on its own thread with single-threaded BLAS; return when all are done.
    Outside ``own_threads`` this is ``fn(0, m)`` with BLAS's own threads."""
    n = min(_OWN_THREADS[-1] if _OWN_THREADS else 1, m // PARALLEL_MIN_COLS)
    if n <= 1 or getattr(_IN_PARALLEL, 'on', False):
        fn(0, m)
        return
    fn = functools.partial(_in_parallel, fn)
    if not _POOL or _POOL[0]._max_workers < n - 1:
        import concurrent.futures
        _POOL[:] = [concurrent.futures.ThreadPoolExecutor(n - 1, thread_name_prefix='blas')]
    bounds = [m * i // n for i in range(n + 1)]
    futures = [_POOL[0].submit(fn, bounds[i], bounds[i + 1]) for i in range(1, n)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


def _ld(a):
    """Leading dimension (row stride in elements) of a 2-D float32 view with unit column
    stride, as BLAS takes it."""
    if a.dtype != numpy.float32 or a.ndim != 2 or (a.shape[1] > 1 and a.strides[1] != 4) \
            or a.strides[0] % 4 or a.strides[0] < 0:
        raise ValueError('gemm needs 2-D float32 views with contiguous rows, got %s %s %s'
                         % (a.dtype, a.shape, a.strides))
    return max(a.strides[0] // 4, a.shape[1], 1)


def gemm(a, b, c, beta=0.0, use_blas=True):
    """``c[...] = a @ b + beta * c`` for 2-D float32 views (rows may be strided, columns
    contiguous); ``beta`` 0 (overwrite) or 1 (accumulate).  ``use_blas=False`` forces the
    NumPy fallback (tests)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape != (m, n):
        raise ValueError('gemm shapes %s @ %s -> %s' % (a.shape, b.shape, c.shape))
    lib = sgemm() if use_blas else None
    if lib is None or m == 0 or n == 0 or k == 0:
        if beta:
            c += numpy.matmul(a, b)
        else:
            c[...] = numpy.matmul(a, b)
        return c
    fn, int_t = lib
    if (_OWN_THREADS and _OWN_THREADS[-1] > 1 and n >= 2 * PARALLEL_MIN_COLS
            and not getattr(_IN_PARALLEL, 'on', False)):  # see own_threads
        parallel_cols(n, lambda lo, hi: gemm(a, b[:, lo:hi], c[:, lo:hi], beta))
        return c
    lda, ldb, ldc = _ld(a), _ld(b), _ld(c)
    fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, lda,
       b.ctypes.data, ldb, float(beta), c.ctypes.data, ldc)
    return c


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
