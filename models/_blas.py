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
import ctypes
import glob
import os

import numpy

_ROW_MAJOR, _NO_TRANS = 101, 111
_LIB = []  # [(cblas_sgemm, int type)] or [None] once looked for


def _find_sgemm():
    """``(cblas_sgemm, ctypes int type)`` of NumPy's bundled OpenBLAS, or None."""
    here = os.path.dirname(numpy.__file__)
    paths = (glob.glob(os.path.join(here, '..', 'numpy.libs', '*openblas*'))  # Linux wheels
             + glob.glob(os.path.join(here, '.dylibs', '*openblas*')))  # macOS wheels
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # ILP64 builds (NumPy's own wheels) suffix their symbols with 64_.
        for name, int_t in (('cblas_sgemm64_', ctypes.c_int64), ('cblas_sgemm', ctypes.c_int)):
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            fn.restype = None
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, int_t, int_t, int_t,
                           ctypes.c_float, ctypes.c_void_p, int_t, ctypes.c_void_p, int_t,
                           ctypes.c_float, ctypes.c_void_p, int_t]
            return fn, int_t
    return None


def sgemm():
    """The bound ``cblas_sgemm`` (and its int type), or None where NumPy has no OpenBLAS."""
    if not _LIB:
        _LIB.append(_find_sgemm())
    return _LIB[0]


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
    lda, ldb, ldc = _ld(a), _ld(b), _ld(c)
    fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, lda,
       b.ctypes.data, ldb, float(beta), c.ctypes.data, ldc)
    return c
