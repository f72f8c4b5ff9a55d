"""CPU inference kernels for the CMU nets (CocoPoseNet, FaceNet, HandNet).

Arrays in, arrays out, no graph: ``models.CocoPoseNet.run_convs`` calls these
instead of the Chainer functions when the forward runs on NumPy arrays with
``chainer.config.train`` False and backprop disabled (what
``chainer.using_config('train', False)`` + ``chainer.no_backprop_mode()``
gives).  They compute the same function as ``F.convolution_2d`` + ``F.relu``
and ``F.max_pooling_2d(ksize=2, stride=2)`` (cover_all, i.e. Caffe's ceil-mode
pooling) up to float rounding; tests/test_fast_path.py compares the two.

Why hand-written: stock Chainer convolves with im2col + ``tensordot`` + a transposed copy
back to NCHW, materialising a (C*k*k, H*W) column matrix per layer and copying the output
twice, which is most of the body net's time and peak memory (figures for everything here:
bench/RESULTS.md).  Here:

* ``_conv_taps`` (most layers; needs the BLAS of ``_blas.py``): no column matrix at
  all.  The input is copied once into a zero-padded (C, H+2p, W+2p) buffer, band
  by band; with the output laid out at the padded width, kernel tap (ky, kx) is one GEMM
  (O x C) @ (C x pixels) reading that buffer in place at offset ky*(W+2p)+kx,
  and BLAS adds the k*k products into the same output rows (beta = 1).  The
  k-1 columns of each output row that fall on the padding are computed and
  dropped when the band is copied out (with bias and ReLU, while in cache).
* Without that BLAS: im2col in row bands of a few MB (so it stays in cache
  between being written and being read by the GEMM), straight from the
  unpadded input, one GEMM per band writing the output rows in NCHW directly;
  for large kernels the band holds only the kx shifts and the k row shifts
  become k GEMMs on offset views of the same buffer (``_conv_row_split``).
* Few input channels (the RGB layer): one GEMM over the full k*k columns of a
  band (``_conv_full``), where per-tap GEMMs with K = 3 would be inefficient.
* 7x7 layers: Winograd F(2, 7) along the width on top of the same per-row GEMMs
  (``_conv_winograd_1d``): 1.75x fewer multiplies.
* Wide 3x3 layers (256+ channels in and out) use Winograd's F(2x2, 3x3)
  (``_conv_winograd``): 2.25x fewer multiplies, faster than ``_conv_taps`` there but not
  on fewer channels.
"""
import functools

import numpy

from models import _blas

# Column-band budget in bytes: small enough to stay in the L2/L3 caches between
# the copy that writes it and the GEMM that reads it, large enough for
# efficient GEMMs (measured: bench/RESULTS.md).
BAND_BYTES = 4 << 20


def _use_row_split(c, k):
    """Row-split (k GEMMs over kx-only columns) rather than one GEMM over the
    full k*k columns: fewer bytes copied for wide kernels, more output passes."""
    return k > 1 and c >= 16


def _fill_shift(dst, x, dy, dx):
    """``dst[c, i, j] = x[c, i + dy, j + dx]`` (zero outside ``x``) for the
    (C, R, W) view ``dst``; ``x`` is (C, H, W)."""
    _, r, w = dst.shape
    h, wx = x.shape[1:]
    i0, i1 = max(0, -dy), min(r, h - dy)
    j0, j1 = max(0, -dx), min(w, wx - dx)
    if i0 >= i1 or j0 >= j1:
        dst[...] = 0
        return
    if i0 > 0:
        dst[:, :i0] = 0
    if i1 < r:
        dst[:, i1:] = 0
    if j0 > 0:
        dst[:, i0:i1, :j0] = 0
    if j1 < w:
        dst[:, i0:i1, j1:] = 0
    dst[:, i0:i1, j0:j1] = x[:, i0 + dy:i1 + dy, j0 + dx:j1 + dx]


def conv2d(x, W, b, pad, relu):
    """Stride-1 ``F.convolution_2d(x, W, b, pad=pad)`` (then ReLU if ``relu``)
    of a float32 NCHW NumPy array; returns a new C-contiguous array."""
    x = numpy.ascontiguousarray(x)
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    if kh != kw:
        raise ValueError('square kernels only, got %dx%d' % (kh, kw))
    k = kh
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    out = numpy.empty((n, o, oh, ow), dtype=numpy.float32)
    if k == 1 and pad == 0:
        wm, xm, om = W.reshape(o, c), x.reshape(n, c, h * w), out.reshape(n, o, oh * ow)
        with _blas.own_threads():  # NumPy 2's OpenBLAS threads: 10x slower under load
            for i in range(n):
                _blas.parallel_cols(h * w, lambda lo, hi: numpy.matmul(
                    wm, xm[i, :, lo:hi], out=om[i, :, lo:hi]))
    elif k == 3 and pad == 1 and c >= WINOGRAD_MIN_CHANNELS and o >= WINOGRAD_MIN_CHANNELS:
        with _blas.own_threads():  # many small GEMMs: threads meet once per band
            _conv_winograd(x, W, b, relu, out)
        return out
    elif c >= TAPS_MIN_CHANNELS and _blas.sgemm() is not None:
        with _blas.own_threads():
            if k == WINOGRAD_1D_KSIZE and pad == k // 2:
                _conv_winograd_1d(x, W, b, relu, out)
            else:
                _conv_taps(x, W, b, pad, relu, out)
        return out
    elif _use_row_split(c, k):
        _conv_row_split(x, W, pad, out)
    else:
        _conv_full(x, W, pad, out)
    if b is not None:
        out += b.reshape(1, o, 1, 1)
    if relu:
        numpy.maximum(out, 0, out=out)
    return out


# Input channels from which one GEMM per kernel tap beats im2col (K = C per GEMM).
TAPS_MIN_CHANNELS = 16
# Output band of ``_conv_taps`` in bytes (measured: 2 MB best for the large front
# layers; the 7x7 stage layers, ~2 MB at 368x656, run as one band).
TAPS_BAND_BYTES = 2 << 20


def _conv_taps(x, W, b, pad, relu, out):
    """Stride-1 convolution as k*k accumulating GEMMs on the zero-padded input, in row
    bands of the output at the padded width; bias and ReLU applied as each band is
    copied out (see the module docstring)."""
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    oh, ow = out.shape[2:]
    wp = w + 2 * pad
    taps = numpy.ascontiguousarray(W.transpose(2, 3, 0, 1))  # (k, k, O, C)
    # A band of r output rows reads r + k - 1 padded input rows: only those are copied
    # (the whole padded input would add ~250 MB at scale 2 of a 368x656 image).
    rows = _band_rows(max(o, c) * wp * 4, oh, TAPS_BAND_BYTES)
    xp = numpy.empty((c, (rows + k - 1) * wp), numpy.float32)
    acc = numpy.empty((o, rows * wp), numpy.float32)
    bias = _bias(b, o)
    for i in range(n):
        for y0 in range(0, oh, rows):
            r = min(rows, oh - y0)
            src = xp[:, :(r + k - 1) * wp]
            _fill_shift(src.reshape(c, r + k - 1, wp), x[i], y0 - pad, -pad)
            # Output pixel (y0 + y, j) of the band is column y * wp + j; the last row
            # stops at its ow-th column, so every read stays inside the band's rows.
            cols = (r - 1) * wp + ow

            def cols_of_taps(lo, hi, src=src):
                dst = acc[:, lo:hi]
                for ky in range(k):
                    for kx in range(k):
                        off = ky * wp + kx
                        _blas.gemm(taps[ky, kx], src[:, off + lo:off + hi], dst,
                                   beta=0.0 if ky == kx == 0 else 1.0)
            _blas.parallel_cols(cols, cols_of_taps)
            res = out[i, :, y0:y0 + r]
            numpy.add(acc.reshape(o, rows, wp)[:, :r, :ow], bias, out=res)
            if relu:
                numpy.maximum(res, 0, out=res)


# The 7x7 stage layers: Winograd F(2, 7) along the width, taps along the height.  Each
# pair of output pixels of a row takes 8 products per kernel row instead of 14: for each
# of the 8 points, the 7 kernel rows are 7 accumulating GEMMs on row-shifted views of
# the transformed input, as in ``_conv_taps`` (and no padding columns are computed).
# Faster than ``_conv_taps`` per layer (bench/RESULTS.md); F(2, 7) because larger tiles
# (F(3, 7), F(4, 7)) come too close to the tests' 1e-5 for the whole net (models/_onnx.py
# uses F(6, 7): onnxruntime's tolerance is 1e-4).
WINOGRAD_1D_KSIZE = 7
WINOGRAD_1D_M = 2
WINOGRAD_1D_POINTS = (0, 1, -1, 2, -2, 1 / 2, -1 / 2)  # and infinity
WINOGRAD_1D_BAND_BYTES = 8 << 20


@functools.lru_cache(maxsize=None)
def winograd_matrices(m, r, points):
    """A^T (m x a), G (a x r), B^T (a x a) of Winograd's F(m, r), a = m + r - 1, on the
    a - 1 finite ``points`` (a tuple) and infinity, in float64: ``A^T [(G g) * (B^T d)]``
    is the correlation of a length-a input ``d`` with a length-r kernel ``g`` (m outputs).
    Computed once per (m, r, points) (every 7x7 layer of every forward asks for them):
    the arrays are shared, hence read-only."""
    a = m + r - 1
    if len(points) != a - 1:
        raise ValueError('F(%d, %d) needs %d finite points, got %d' % (m, r, a - 1, len(points)))

    def vandermonde(n):  # row i: the powers 0..n-1 of point i; infinity: only the top one
        v = numpy.zeros((a, n))
        v[:-1] = numpy.asarray(points, numpy.float64)[:, None] ** numpy.arange(n)
        v[-1, -1] = 1
        return v
    matrices = vandermonde(m).T, vandermonde(r), numpy.linalg.inv(vandermonde(a)).T
    for matrix in matrices:
        matrix.flags.writeable = False
    return matrices


def _conv_winograd_1d(x, W, b, relu, out):
    """Stride-1 ``pad = k // 2`` convolution by F(WINOGRAD_1D_M, k) along the width, in
    bands of output rows; bias and ReLU applied per band."""
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    m, p = WINOGRAD_1D_M, k // 2
    a = m + k - 1
    at, g, bt = winograd_matrices(m, k, WINOGRAD_1D_POINTS)
    at, g, bt = at.astype(numpy.float32), g.astype(numpy.float32), bt.astype(numpy.float32)
    # U[point, ky] = sum over kx of G[point, kx] W[:, :, ky, kx]: (a, k, O, C), one GEMM
    # (G's entries, powers of the points, are exact in float32; einsum took ~7 ms a layer).
    u = numpy.matmul(g, W.transpose(3, 2, 0, 1).reshape(k, -1)).reshape(a, k, o, c)
    tw = -(-w // m)  # tiles of m output pixels per row
    rows = _band_rows(a * max(c, o) * tw * 4, h, WINOGRAD_1D_BAND_BYTES)
    xb_buf = numpy.empty(c * (rows + k - 1) * (m * tw + k - 1), numpy.float32)
    d_buf = numpy.empty(a * c * (rows + k - 1) * tw, numpy.float32)
    v_buf = numpy.empty(a * c * (rows + k - 1) * tw, numpy.float32)
    m_buf = numpy.empty(a * o * rows * tw, numpy.float32)
    y_buf = numpy.empty(m * o * rows * tw, numpy.float32)
    bias = _bias(b, o)
    for i in range(n):
        for y0 in range(0, h, rows):
            r = min(rows, h - y0)
            ri = r + k - 1  # input rows of the band
            xb = xb_buf[:c * ri * (m * tw + k - 1)].reshape(c, ri, m * tw + k - 1)
            _fill_shift(xb, x[i], y0 - p, -p)
            d = d_buf[:a * c * ri * tw].reshape(a, c, ri, tw)
            for j in range(a):
                d[j] = xb[:, :, j:j + m * tw:m]
            v = v_buf[:a * c * ri * tw].reshape(a, c, ri * tw)
            numpy.matmul(bt, d.reshape(a, -1), out=v.reshape(a, -1))
            prod = m_buf[:a * o * r * tw].reshape(a, o, r * tw)

            def cols_of_products(lo, hi, v=v, prod=prod):
                for j in range(a):
                    for ky in range(k):
                        _blas.gemm(u[j, ky], v[j][:, ky * tw + lo:ky * tw + hi],
                                   prod[j, :, lo:hi], beta=0.0 if ky == 0 else 1.0)
            _blas.parallel_cols(r * tw, cols_of_products)
            y = y_buf[:m * o * r * tw].reshape(m, o, r, tw)
            numpy.matmul(at, prod.reshape(a, -1), out=y.reshape(m, -1))
            band = out[i, :, y0:y0 + r]
            for j in range(m):
                dst = band[:, :, j::m]
                numpy.add(y[j, :, :, :dst.shape[2]], bias, out=dst)
            if relu:
                numpy.maximum(band, 0, out=band)


def _bias(b, o):
    """The bias as an (O, 1, 1) array to add to an output band (zeros for none)."""
    return numpy.zeros((o, 1, 1), numpy.float32) if b is None else b.reshape(o, 1, 1)


def _band_rows(bytes_per_row, total, budget=None):
    budget = BAND_BYTES if budget is None else budget
    return max(1, min(total, budget // max(1, bytes_per_row)))


def _conv_full(x, W, pad, out):
    """One GEMM per row band over the full (C*k*k, rows*W) column matrix, laid
    out in ``W``'s own (c, ky, kx) order so the weights need no copy."""
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    oh, ow = out.shape[2:]
    wm = W.reshape(o, c * k * k)
    rows = _band_rows(c * k * k * ow * 4, oh)
    buf = numpy.empty(c * k * k * rows * ow, dtype=numpy.float32)
    for i in range(n):
        flat = out[i].reshape(o, oh * ow)
        for y0 in range(0, oh, rows):
            r = min(rows, oh - y0)
            col = buf[:c * k * k * r * ow].reshape(c, k, k, r, ow)
            for ky in range(k):
                for kx in range(k):
                    _fill_shift(col[:, ky, kx], x[i], y0 + ky - pad, kx - pad)
            cm, dst = col.reshape(c * k * k, r * ow), flat[:, y0 * ow:(y0 + r) * ow]
            with _blas.own_threads():
                _blas.parallel_cols(r * ow, lambda lo, hi: numpy.matmul(
                    wm, cm[:, lo:hi], out=dst[:, lo:hi]))


def _conv_row_split(x, W, pad, out):
    """Per row band: columns for the k horizontal shifts over r + k - 1 rows
    ((C*k, (r+k-1)*W), k times the input), then for each kernel row ky one GEMM
    on the view starting ky rows down, summed into the output band."""
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    oh, ow = out.shape[2:]
    wk = [numpy.ascontiguousarray(W[:, :, ky, :]).reshape(o, c * k) for ky in range(k)]
    rows = _band_rows(c * k * ow * 4, oh)
    buf = numpy.empty(c * k * (rows + k - 1) * ow, dtype=numpy.float32)
    tmp = numpy.empty(o * rows * ow, dtype=numpy.float32)
    for i in range(n):
        flat = out[i].reshape(o, oh * ow)
        for y0 in range(0, oh, rows):
            r = min(rows, oh - y0)
            col = buf[:c * k * (r + k - 1) * ow].reshape(c, k, r + k - 1, ow)
            for kx in range(k):
                _fill_shift(col[:, kx], x[i], y0 - pad, kx - pad)
            cols = col.reshape(c * k, (r + k - 1) * ow)
            dst = flat[:, y0 * ow:(y0 + r) * ow]
            t = tmp[:o * r * ow].reshape(o, r * ow)
            for ky in range(k):
                view = cols[:, ky * ow:(ky + r) * ow]
                if ky == 0:
                    numpy.matmul(wk[ky], view, out=dst)
                else:
                    numpy.matmul(wk[ky], view, out=t)
                    dst += t


def max_pool_2x2(x):
    """``F.max_pooling_2d(x, 2, 2)`` with cover_all (Caffe's ceil mode): an odd
    last row/column forms a window of its own."""
    n, c, h, w = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    out = numpy.empty((n, c, oh, ow), dtype=x.dtype)
    he, we = h // 2, w // 2  # full windows
    a = out[:, :, :he, :we]
    numpy.maximum(x[:, :, 0:2 * he:2, 0:2 * we:2], x[:, :, 0:2 * he:2, 1:2 * we:2], out=a)
    numpy.maximum(a, x[:, :, 1:2 * he:2, 0:2 * we:2], out=a)
    numpy.maximum(a, x[:, :, 1:2 * he:2, 1:2 * we:2], out=a)
    if w % 2:  # last column: windows of 2x1
        numpy.maximum(x[:, :, 0:2 * he:2, w - 1], x[:, :, 1:2 * he:2, w - 1],
                      out=out[:, :, :he, ow - 1])
    if h % 2:  # last row: windows of 1x2 (and 1x1 in the corner)
        numpy.maximum(x[:, :, h - 1, 0:2 * we:2], x[:, :, h - 1, 1:2 * we:2],
                      out=out[:, :, oh - 1, :we])
        if w % 2:
            out[:, :, oh - 1, ow - 1] = x[:, :, h - 1, w - 1]
    return out


# Winograd F(2x2, 3x3) (Lavin & Gray 2016) for 3x3 stride-1 pad-1 convolutions on many
# channels: each 2x2 output tile costs 16 multiplies per (in, out) channel pair instead of
# 36, i.e. 16 GEMMs (O x C) @ (C x tiles) replace one (O x 9C) @ (9C x pixels).  The
# transforms only add and subtract (float rounding only; tests compare with Chainer within
# 1e-5).  Used where the GEMMs dominate the transforms: C and O >= WINOGRAD_MIN_CHANNELS
# (with fewer channels in or out the transforms eat the gain).  Larger tiles (F(4x4, 3x3))
# come too close to the tests' 1e-5 for the whole net in float32.
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_BAND_BYTES = 16 << 20  # larger than BAND_BYTES: 16 GEMMs per band want wide ones
# F(2x2, 3x3) as Kronecker products, so that each transform of a band is one GEMM
# (a little faster than the same transforms as NumPy additions):
# input tiles d (4x4) -> V = B^T d B, weights g (3x3) -> U = G g G^T, products M -> the
# 2x2 outputs A^T M A; index 4 * i + j of the 4x4 tile.
_BT = numpy.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], numpy.float32)
_G = numpy.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], numpy.float32)
_AT = numpy.array([[1, 1, 1, 0], [0, 1, -1, -1]], numpy.float32)
_BB, _GG, _AA = numpy.kron(_BT, _BT), numpy.kron(_G, _G), numpy.kron(_AT, _AT)


def _winograd_weights(W):
    """U = G g G^T for every (o, c): (16, O, C)."""
    o, c = W.shape[:2]
    return numpy.matmul(_GG, W.reshape(o * c, 9).T).reshape(16, o, c)


def _conv_winograd(x, W, b, relu, out):
    """Winograd F(2x2, 3x3) in bands of tile rows; bias and ReLU applied per band."""
    n, c, h, w = x.shape
    o = W.shape[0]
    u = _winograd_weights(W)
    th, tw = -(-h // 2), -(-w // 2)  # output tiles
    pw = 2 * tw + 2
    rows = _band_rows(16 * max(c, o) * tw * 4, th, WINOGRAD_BAND_BYTES)
    xb_buf = numpy.empty(c * (2 * rows + 2) * pw, numpy.float32)
    d_buf = numpy.empty(16 * c * rows * tw, numpy.float32)
    v_buf = numpy.empty(16 * c * rows * tw, numpy.float32)
    m_buf = numpy.empty(16 * o * rows * tw, numpy.float32)
    y_buf = numpy.empty(4 * o * rows * tw, numpy.float32)
    bias = _bias(b, o)
    for i in range(n):
        for t0 in range(0, th, rows):
            r = min(rows, th - t0)
            xb = xb_buf[:c * (2 * r + 2) * pw].reshape(c, 2 * r + 2, pw)
            _fill_shift(xb, x[i], 2 * t0 - 1, -1)  # the band's rows with the zero border
            d = d_buf[:16 * c * r * tw].reshape(4, 4, c, r, tw)
            for ty in range(4):
                for tx in range(4):
                    d[ty, tx] = xb[:, ty:ty + 2 * r:2, tx:tx + 2 * tw:2]
            v = v_buf[:16 * c * r * tw].reshape(16, c * r * tw)
            numpy.matmul(_BB, d.reshape(16, c * r * tw), out=v)
            m = m_buf[:16 * o * r * tw].reshape(16, o, r * tw)
            v16 = v.reshape(16, c, r * tw)

            def cols_of_products(lo, hi, v16=v16, m=m):
                numpy.matmul(u, v16[:, :, lo:hi], out=m[:, :, lo:hi])
            _blas.parallel_cols(r * tw, cols_of_products)
            y = y_buf[:4 * o * r * tw].reshape(4, o * r * tw)
            numpy.matmul(_AA, m.reshape(16, o * r * tw), out=y)
            y = y.reshape(2, 2, o, r, tw)
            band = out[i, :, 2 * t0:2 * t0 + 2 * r]
            for ty in range(2):
                for tx in range(2):
                    dst = band[:, ty::2, tx::2]
                    numpy.add(y[ty, tx, :, :dst.shape[1], :dst.shape[2]], bias, out=dst)
            if relu:
                numpy.maximum(band, 0, out=band)
