"""``C = A @ B + beta * C`` on strided float32 views, through the BLAS NumPy itself uses.

``numpy.matmul`` cannot accumulate into its output (BLAS ``beta = 1``) and copies any
operand whose rows are not contiguous in memory.  The CPU convolutions of ``_fast.py``
need both: a KxK convolution is KxK GEMMs, one per kernel tap, each reading the padded
input *in place* at an offset (rows = channels, stride H*W) and adding into the same output
(no im2col copies and no ``out += tmp`` passes; figures: bench/RESULTS.md).

``gemm`` calls ``cblas_sgemm`` of the OpenBLAS bundled in NumPy's wheel (``compat.openblas``:
found next to NumPy, loaded once with ctypes; the same library and thread pool NumPy uses).  Where there
is none (another NumPy build), ``gemm`` falls back on ``numpy.matmul`` with the same
results (slower; ``tests/test_fast_path.py`` runs both).
"""
import contextlib
import ctypes
import functools
import threading

import numpy

from compat import openblas

_ROW_MAJOR, _NO_TRANS = 101, 111
_LIB = []  # [(cblas_sgemm, int type)] or [None] once looked for


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
    on a loaded machine costs more than the GEMMs (bench/RESULTS.md); ``parallel_cols``
    meets its threads once per loop instead.
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
