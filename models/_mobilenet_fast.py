"""CPU inference kernels of ``MobileNetV2PoseNet`` (NumPy arrays in and out, no graph).

``MobileNetV2PoseNet.forward`` takes them (``forward`` here) when the input is a
NumPy array, ``chainer.config.train`` is False and backprop is disabled; they
compute the same function as the model's Chainer functions (tests/test_mobilenet.py
compares the two), one image at a time (the backbone's normalisation is per
image anyway), on 2-D ``(channels, H * W)`` arrays.  CuPy input takes the
Chainer functions.

Why hand-written: the stock Chainer CPU path took several times cv2.dnn's time, these
kernels about cv2.dnn's (figures, and the alternatives measured and dropped:
bench/RESULTS.md).  Depthwise convolutions are one call per layer of the C kernel
``models/_depthwise.c`` (per-channel OpenCV ``filter2D`` where no C compiler works); ReLU
and ReLU6 are ``cv2.threshold`` calls; the 1x1 *expand* convolutions fold the per-image
normalisation that follows them into their weights (its statistics follow from the input's:
``mean(Wx) = W mean(x)``, ``var(Wx)_o = w_o^T cov(x) w_o``), its shift one more weight
column against a row of ones that the block outputs carry; other normalisations are
explicit (two-pass variance); in the refinement stages the stored-statistics batch norms'
shifts and the last two layers' 1x1 depthwise kernels are folded into the 1x1 weights.
"""
import ctypes

import cv2
import numpy

from models import _blas, _native
from models._mobilenet_table import (FINE_BLOCK, N_STAGES, STAGE_KSIZES,
                                     interpolation_matrix_tf_legacy, same_padding)

RELU6 = 6.0


def conv_im2col(x, W, stride):
    """A k x k convolution of one image ``x`` (C, H, W) (the stem: 3 -> 16
    channels, stride 2), SAME padding: im2col from strided views + one GEMM.
    Returns ``(y, (oh, ow))`` with ``y`` (O, oh * ow)."""
    c, h, w = x.shape
    o, _, k, _ = W.shape
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    oh, ow = -(-h // stride), -(-w // stride)
    padded = numpy.pad(x, ((0, 0), (top, bottom), (left, right)))
    cols = numpy.empty((c, k, k, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = padded[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
    y = numpy.empty((o, oh * ow), dtype=x.dtype)
    _blas.gemm(numpy.ascontiguousarray(W.reshape(o, c * k * k)),
               cols.reshape(c * k * k, oh * ow), y)
    return y, (oh, ow)


_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
_DEPTHWISE_C = {'depthwise_conv2d_same': (_I, [_P, _L, _I, _I, _I, _P, _I, _I, _I, _I,
                                               _P, _L, _I, _I])}


def _planes(a):
    """Float32 (C, H, W) view whose planes have contiguous rows: its plane stride in
    elements, else None."""
    c, h, w = a.shape
    if c == 1:
        plane = h * w  # (NumPy may give length-1 axes any stride)
    elif a.strides[0] < 0 or a.strides[0] % 4:
        return None
    else:
        plane = a.strides[0] // 4
    if a.dtype != numpy.float32 or (w > 1 and a.strides[2] != 4) \
            or (h > 1 and a.strides[1] != 4 * w):
        return None
    return plane


def depthwise_kernel():
    """Which depthwise convolution ``depthwise`` runs here, in words (bench output)."""
    if _native.load('_depthwise', _DEPTHWISE_C) is not None:
        return 'C kernel (models/_depthwise.c)'
    return 'OpenCV filter2D per channel (%s)' % _native.reason('_depthwise')


def depthwise(x, W, stride, out, native=True):
    """Multiplier-1 depthwise convolution of one image ``x`` (C, H, W) with
    ``W`` (C, k, k), SAME padding, into ``out`` (C, oh, ow) (rows of a bigger
    buffer are fine).

    By default one call of the C kernel ``models/_depthwise.c`` (built on first
    use; the fastest here, see that file).  Without it
    (``native=False``, or no C compiler) two NumPy/OpenCV ways:

    Maps of 512+ pixels: OpenCV's ``filter2D`` per channel (a correlation, as
    in TensorFlow; zero border = SAME padding; stride 2 = every other output of
    the stride-1 result, starting where SAME's asymmetric padding puts the
    first window).  Otherwise the input is zero-padded once into a flat buffer
    in which every kernel tap is a strided view at a fixed offset, and the
    output is the sum of the k*k views scaled per channel.  Both beat im2col
    several times; filter2D beats the views on large maps and loses on small ones,
    hence the threshold (bench/RESULTS.md).
    """
    c, h, w = x.shape
    k = W.shape[1]
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    oh, ow = out.shape[1:]
    lib = _native.load('_depthwise', _DEPTHWISE_C) if native else None
    if lib is not None:
        if W.shape != (c, k, k) or out.shape != (c, -(-h // stride), -(-w // stride)):
            raise ValueError('depthwise shapes: x %s, W %s, stride %d -> out %s'
                             % (x.shape, W.shape, stride, out.shape))
        W = numpy.ascontiguousarray(W, dtype=numpy.float32)
        x_plane, out_plane = _planes(x), _planes(out)
        if x_plane is None:
            x = numpy.ascontiguousarray(x, dtype=numpy.float32)
            x_plane = h * w
        if out_plane is None:
            raise ValueError('depthwise output needs float32 planes with contiguous rows, '
                             'got %s %s' % (out.dtype, out.strides))
        if lib.depthwise_conv2d_same(x.ctypes.data, x_plane, c, h, w, W.ctypes.data, k,
                                     stride, top, left, out.ctypes.data, out_plane, oh, ow):
            raise MemoryError('depthwise convolution: no memory for a %dx%d scratch plane'
                              % (oh, ow))
        return out
    if h * w >= 512 and k % 2 == 1:
        r0, c0 = k // 2 - top, k // 2 - left  # stride-1 output of the first window
        filter2d, border = cv2.filter2D, cv2.BORDER_CONSTANT
        for src, kernel, dst in zip(x, W, out):
            if stride == 1:
                filter2d(src, -1, kernel, dst, (-1, -1), 0, border)
            else:
                dst[...] = filter2d(src, -1, kernel, None, (-1, -1), 0,
                                    border)[r0::stride, c0::stride]
        return out
    taps = W.reshape(c, k * k)
    width = left + w + right
    length = oh * width  # outputs per channel, garbage columns included
    last = (k - 1) * width + (k - 1) + stride * (length - 1)  # furthest index read
    rows = max(top + h + bottom, last // width + 1)
    buf = numpy.zeros((c, rows, width), dtype=x.dtype)
    buf[:, top:top + h, left:left + w] = x
    flat = buf.reshape(c, rows * width)
    y = numpy.empty((c, length), dtype=x.dtype)
    tmp = numpy.empty_like(y)
    for t in range(k * k):
        offset = (t // k) * width + t % k
        view = flat[:, offset:offset + stride * (length - 1) + 1:stride]
        if t == 0:
            numpy.multiply(view, taps[:, :1], out=y)
        else:
            numpy.multiply(view, taps[:, t:t + 1], out=tmp)
            y += tmp
    out[...] = y.reshape(c, oh, width)[:, :, :ow]
    return out


def relu_(y):
    """ReLU of a 2-D float32 array in place.  ``cv2.threshold`` rather than
    ``numpy.maximum``/``numpy.clip``, which run several times slower on float32."""
    return cv2.threshold(y, 0, 0, cv2.THRESH_TOZERO, dst=y)[1]


def relu6_(y):
    """ReLU6 of a 2-D float32 array in place (two ``cv2.threshold``, see ``relu_``)."""
    cv2.threshold(y, RELU6, RELU6, cv2.THRESH_TRUNC, dst=y)
    return relu_(y)


def _scale_shift(mean, var, gamma, beta, eps):
    """Per-channel ``(s, b)`` with ``normalised = s * x + b``."""
    s = gamma / numpy.sqrt(numpy.maximum(var, 0) + eps)
    return s, beta - mean * s


def normalise(y, gamma, beta, eps, relu6, residual=None):
    """Per-channel normalisation of ``y`` (C, P) in place (two-pass variance),
    then ReLU6 if asked, plus ``residual``."""
    # BLAS matrix-vector product: several times faster than numpy's mean here
    y -= (y @ numpy.full(y.shape[1], 1 / y.shape[1], dtype=y.dtype))[:, None]
    var = numpy.einsum('ij,ij->i', y, y) / y.shape[1]
    y *= (gamma / numpy.sqrt(var + eps))[:, None]
    y += beta[:, None]
    if relu6:
        relu6_(y)
    if residual is not None:
        y += residual
    return y


def expand_normalised(x, W, gamma, beta, eps):
    """``relu6(normalise(W @ x[:C]))`` for a 1x1 convolution ``W`` (O, C) with
    few input channels; ``x`` (C + 1, P) ends with a row of ones.  Statistics
    from the input's mean and covariance, the scale folded into ``W`` and the
    shift as its last column (against the ones), then one ReLU6.  (The
    covariance of the centred input is summed in float32, without cancellation;
    the variances in float64.)"""
    o, c = W.shape
    data = x[:c]
    m = data.mean(axis=1)
    centred = data - m[:, None]
    cov = (centred @ centred.T).astype(numpy.float64) / x.shape[1]
    W64 = W.astype(numpy.float64)
    var = ((W64 @ cov) * W64).sum(axis=1)  # diag(W cov W^T)
    s, b = _scale_shift(W64 @ m, var, gamma, beta, eps)
    folded = numpy.empty((o, c + 1), dtype=x.dtype)
    folded[:, :c] = W64 * s[:, None]
    folded[:, c] = b
    out = numpy.empty((o, x.shape[1]), dtype=x.dtype)
    _blas.gemm(folded, x, out)
    return relu6_(out)


def resize_into(x, shape, out):
    """TensorFlow's legacy bilinear resize of ``x`` (C, h * w) from ``shape``
    (h, w) to ``out`` (C, H, W), as two matrix products."""
    (h, w), (c, oh, ow) = shape, out.shape
    rows = x.reshape(c * h, w) @ interpolation_matrix_tf_legacy(ow, w, x.dtype).T  # (C * h, W)
    numpy.matmul(interpolation_matrix_tf_legacy(oh, h, x.dtype), rows.reshape(c, h, ow), out=out)
    return out


def forward(model, x):
    """``MobileNetV2PoseNet.forward`` of a NumPy batch ``x`` (N, 3, H, W), one image at a
    time: ``(pafs, heatmaps)``, lists of the six stages' (N, C, h, w) arrays."""
    outs = [_image(model, image) for image in x]
    return ([numpy.stack([o[0][s] for o in outs]) for s in range(N_STAGES)],
            [numpy.stack([o[1][s] for o in outs]) for s in range(N_STAGES)])


def _image(model, image):
    """``(pafs, heatmaps)`` of one (3, H, W) image: lists of (C, h, w) arrays."""
    with _blas.own_threads():  # its ~200 small GEMMs: threads meet once per GEMM
        feature, shape = features(model, image)
        pafs, heatmaps = [], []
        h = feature
        for stage in range(1, N_STAGES + 1):
            paf = branch(model, stage, 'L1', h, shape)
            heatmap = branch(model, stage, 'L2', h, shape)
            pafs.append(paf.reshape((-1,) + shape))
            heatmaps.append(heatmap.reshape((-1,) + shape))
            if stage < N_STAGES:
                h = numpy.concatenate((paf, heatmap, feature))
        return pafs, heatmaps


def features(model, image):
    """``model.features`` of one image: ``((64, h * w) array, (h, w))``."""
    norm = model['Conv_bn']
    h, shape = conv_im2col(image, model['Conv'].W.array, 2)
    normalise(h, norm.gamma.array, norm.beta.array, norm.eps, True)
    for name, has_expand, stride, residual in model._blocks:
        y = h
        if has_expand:
            conv, norm = model[name + '_expand'], model[name + '_expand_bn']
            y = expand_normalised(y, conv.W.array[:, :, 0, 0], norm.gamma.array,
                                  norm.beta.array, norm.eps)
        conv, norm = model[name + '_depthwise'], model[name + '_depthwise_bn']
        c = y.shape[0]
        out_shape = (-(-shape[0] // stride), -(-shape[1] // stride))
        d = numpy.empty((c,) + out_shape, dtype=y.dtype)
        depthwise(y.reshape((c,) + shape), conv.W.array[0], stride, d)
        d = normalise(d.reshape(c, -1), norm.gamma.array, norm.beta.array, norm.eps, True)
        conv, norm = model[name + '_project'], model[name + '_project_bn']
        o = conv.W.shape[0]
        z = numpy.empty((o + 1, d.shape[1]), dtype=y.dtype)  # + ones for the next expand
        z[o] = 1
        _blas.gemm(conv.W.array[:, :, 0, 0], d, z[:o])
        normalise(z[:o], norm.gamma.array, norm.beta.array, norm.eps, False,
                  h[:o] if residual else None)
        h = z
        shape = out_shape
        if name == FINE_BLOCK:
            fine, fine_shape = h[:o], shape
    feature = numpy.empty((model.feature_channels,) + fine_shape, dtype=h.dtype)
    feature[:fine.shape[0]] = fine.reshape(feature[:fine.shape[0]].shape)
    resize_into(h[:o], shape, feature[fine.shape[0]:])
    return feature.reshape(model.feature_channels, -1), fine_shape


def branch(model, stage, which, x, shape):
    """``model.branch`` (branch ``which``, 'L1' or 'L2') on one image's (C, h * w) array.
    Every activation but the output carries a row of ones, so the batch norm's shift is a
    column of the folded 1x1 weights (as are the 1x1 depthwise kernels)."""
    h = x
    last = len(STAGE_KSIZES)
    for i in range(1, last + 1):
        name = 'MConv_Stage%d_%s_%d' % (stage, which, i)
        dw, pw, bn = model[name + '_depthwise'], model[name + '_pointwise'], \
            model[name + '_pointwise_bn']
        scale = bn.gamma.array / numpy.sqrt(bn.avg_var + bn.eps)
        o, c = pw.W.shape[:2]
        W = numpy.empty((o, c + 1), dtype=x.dtype)
        W[:, c] = bn.beta.array - bn.avg_mean * scale
        if dw.W.shape[2:] == (1, 1):  # h already has its row of ones
            W[:, :c] = pw.W.array[:, :, 0, 0] * scale[:, None] * dw.W.array[0, :, 0, 0]
        else:
            W[:, :c] = pw.W.array[:, :, 0, 0] * scale[:, None]
            d = numpy.empty((c + 1, h.shape[1]), dtype=x.dtype)
            d[c] = 1
            depthwise(h[:c].reshape((c,) + shape), dw.W.array[0], 1,
                      d[:c].reshape((c,) + shape))
            h = d
        out = numpy.empty((o + (i < last), h.shape[1]), dtype=x.dtype)
        _blas.gemm(W, h, out[:o])
        if i < last:
            out[o] = 1
            relu_(out)
        h = out
    return h
