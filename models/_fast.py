"""CPU inference kernels for the CMU nets (CocoPoseNet, FaceNet, HandNet).

Arrays in, arrays out, no graph: ``models.CocoPoseNet.run_convs`` calls these
instead of the Chainer functions when the forward runs on NumPy arrays with
``chainer.config.train`` False and backprop disabled (what
``chainer.using_config('train', False)`` + ``chainer.no_backprop_mode()``
gives).  They compute the same function as ``F.convolution_2d`` + ``F.relu``
and ``F.max_pooling_2d(ksize=2, stride=2)`` (cover_all, i.e. Caffe's ceil-mode
pooling) up to float rounding; tests/test_fast_path.py compares the two.

Why hand-written (measured on the 2-core CI machine, bench/run_all.py): stock
Chainer convolves with im2col + ``tensordot`` + a transposed copy back to NCHW,
materialising a (C*k*k, H*W) column matrix per layer (2.2 GB for conv1_2 at
scale 2 of a 368x656 image) and copying the output twice; that is ~94 % of the
body net's time and most of its peak memory.  Here the column matrix is built
in row bands of a few MB (so it stays in cache between being written and being
read by the GEMM), straight from the unpadded input (the zero border is
written, not copied from a padded image), and one GEMM per band writes the
output rows in NCHW directly.  For large kernels (7x7 on 128-185 channels) the
band holds only the kx shifts (k times the input, not k*k times) and the k row
shifts become k GEMMs on offset views of the same buffer, accumulated; see
``_use_row_split``.
"""
import numpy

# Column-band budget in bytes: small enough to stay in the L2/L3 caches between
# the copy that writes it and the GEMM that reads it, large enough for
# efficient GEMMs (measured: 2-6 MB within the noise, 16 MB+ slower).
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
        numpy.matmul(W.reshape(o, c), x.reshape(n, c, h * w), out=out.reshape(n, o, oh * ow))
    elif _use_row_split(c, k):
        _conv_row_split(x, W, pad, out)
    else:
        _conv_full(x, W, pad, out)
    if b is not None:
        out += b.reshape(1, o, 1, 1)
    if relu:
        numpy.maximum(out, 0, out=out)
    return out


def _band_rows(bytes_per_row, total):
    return max(1, min(total, BAND_BYTES // max(1, bytes_per_row)))


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
            numpy.matmul(wm, col.reshape(c * k * k, r * ow), out=flat[:, y0 * ow:(y0 + r) * ow])


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
