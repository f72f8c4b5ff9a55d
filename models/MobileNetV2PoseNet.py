"""tf-pose-estimation's ``mobilenet_v2_small`` PAF network, ported to Chainer.

A COCO-trained OpenPose-style model (ildoonet/tf-pose-estimation,
``models/graph/mobilenet_v2_small/graph_opt.pb``, Apache-2.0): a MobileNetV2
backbone of width 0.5 and six two-branch refinement stages of depthwise-
separable convolutions, refine width 0.5.  The shipped weights are
``models/mobilenet_v2_small.npz`` (see models/README.md); ``tfgraph.py``
converts the frozen graph into this class.

Input: float32 NCHW, **BGR, raw 0..255** (no mean or scale).  Any H and W work
(tf-pose itself resizes to the target size, no padding).  Padding is not free
here: the per-image statistics include the padded area, so padding an image by
16 px moves heatmap values by up to ~0.2 (the pipeline's padding is set in
``entity.params['pose_archs']``).
Output: ``(pafs, heatmaps)``, lists of the six stages' outputs at stride 8
(ceil(H / 8) x ceil(W / 8)): 38 PAF channels (branch L1) and 19 heatmap
channels (branch L2: the 18 CMU parts + background), the same interface as
``CocoPoseNet``.

Three details of the TensorFlow graph are reproduced exactly:

* The backbone's 39 batch norms ran in *training mode* when the graph was
  frozen: TensorFlow normalises with the statistics of the input itself, even at
  inference.  For one image this is per-channel normalisation over H x W
  (eps 1e-3), i.e. instance normalisation, done here per image so that images of
  a batch never change each other's results (``InstanceNormalization``).  The
  refinement stages' batch norms use stored statistics (ordinary
  ``L.BatchNormalization``).
* TensorFlow ``SAME`` padding: for stride 2 it pads asymmetrically (nothing
  before, one after, for an even size), which a symmetric pad does not match.
* The single bilinear upsampling uses TensorFlow's legacy ``ResizeBilinear``
  (``align_corners=False``, no half-pixel centres): source = dst * in / out.
  ``resize_bilinear_tf_legacy`` applies it as two interpolation matrices.

Link names mirror the TensorFlow scopes with ``/`` replaced by ``_`` (and the
``MobilenetV2/`` and ``Openpose/`` prefixes dropped): ``expanded_conv_3_expand``
is ``MobilenetV2/expanded_conv_3/expand``, its batch norm is
``expanded_conv_3_expand_bn``; ``MConv_Stage2_L1_4_pointwise`` is
``Openpose/MConv_Stage2_L1_4_pointwise``.  ``MobileNetV2PoseNet.tf_nodes`` maps
every link to the graph node it is converted from.
"""
import chainer
import chainer.functions as F
import chainer.links as L
import cv2
import numpy
from chainer import backend

BN_EPS = 1e-3  # epsilon of every FusedBatchNorm in the graph

# Backbone (MobileNetV2, depth multiplier 0.5): stem conv 3x3 stride 2 to 16
# channels, then the inverted-residual blocks (name, expansion, out channels,
# stride).  A block adds its input back when stride is 1 and channels match.
STEM_CHANNELS = 16
BLOCKS = [
    ('expanded_conv', 1, 8, 1),
    ('expanded_conv_1', 6, 16, 2),
    ('expanded_conv_2', 6, 16, 1),
    ('expanded_conv_3', 6, 16, 2),
    ('expanded_conv_4', 6, 16, 1),
    ('expanded_conv_5', 6, 16, 1),   # stride 8: the fine half of the features
    ('expanded_conv_6', 6, 32, 2),
    ('expanded_conv_7', 6, 32, 1),
    ('expanded_conv_8', 6, 32, 1),
    ('expanded_conv_9', 6, 32, 1),
    ('expanded_conv_10', 6, 48, 1),
    ('expanded_conv_11', 6, 48, 1),
    ('expanded_conv_12', 6, 48, 1),  # stride 16: upsampled to stride 8
]
FINE_BLOCK = 'expanded_conv_5'
COARSE_BLOCK = 'expanded_conv_12'

# Refinement: 6 stages x 2 branches, each 5 x (depthwise kxk -> pointwise 1x1
# -> batch norm -> ReLU), no ReLU after the last.  Stage 1 reads the 64-channel
# features, later stages concat(L1, L2, features) = 38 + 19 + 64 = 121 channels.
N_STAGES = 6
N_PAFS = 38
N_HEATMAPS = 19
BRANCH_OUT = {'L1': N_PAFS, 'L2': N_HEATMAPS}
STAGE_KSIZES = [3, 3, 3, 1, 1]
STAGE1_WIDTHS = [64, 64, 64, 256]
STAGE_WIDTHS = [64, 64, 64, 64]


def same_padding(size, ksize, stride):
    """TensorFlow ``SAME`` padding of one axis: ``(before, after)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + ksize - size, 0)
    return total // 2, total - total // 2


def _pad_same(x, ksize, stride):
    """Pad ``x`` (NCHW) for a ``SAME`` convolution; returns the padded input
    (or ``x``) and the symmetric pad the convolution itself should apply."""
    (top, bottom), (left, right) = (same_padding(x.shape[2], ksize, stride),
                                    same_padding(x.shape[3], ksize, stride))
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), 'constant'), (0, 0)


def conv_same(x, W, stride=1):
    """``F.convolution_2d`` (no bias) with TensorFlow ``SAME`` padding."""
    x, pad = _pad_same(x, W.shape[2], stride)
    return F.convolution_2d(x, W, stride=stride, pad=pad)


def depthwise_same(x, W, stride=1):
    """``F.depthwise_convolution_2d`` (no bias) with TensorFlow ``SAME`` padding."""
    x, pad = _pad_same(x, W.shape[2], stride)
    return F.depthwise_convolution_2d(x, W, stride=stride, pad=pad)


# -- inference fast paths (arrays in, arrays out; no graph, no batch statistics) --
#
# Used when ``chainer.config.train`` is False and ``enable_backprop`` is False.
# They compute the same function as the differentiable path (tests compare the
# two); they exist because the stock CPU kernels are slow for this network:
# im2col + tensordot for 1x1 convolutions, im2col + batched matmul for the
# depthwise ones, several passes per batch norm.  ``bench/bench_mobilenet.py
# --stock`` (2 cores shared with other jobs, medians of 15 interleaved runs,
# 432x368 / 656x368): stock functions 5-9x cv2.dnn's time, these fast paths
# 1.4-1.9x / 1.2-1.5x (at an idle moment, 432x368: ~70 ms vs cv2.dnn's 30 ms:
# numpy's elementwise work runs on one core, cv2.dnn uses both).  Spreading channel
# groups or the two branches over threads, chunking channels for the cache, and
# folding the expand layers' normalisation into their weights were tried and
# measured no faster here.

def _pointwise_fast(x, W, shift=None):
    """1x1 convolution ``W`` (O, C) of ``x`` (N, C, H, W) as one matrix product,
    plus a per-channel ``shift``."""
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    y = xp.matmul(W, x.reshape(n, c, h * w))
    if shift is not None:
        y += shift[:, None]
    return y.reshape(n, W.shape[0], h, w)


def _conv_fast(x, W, stride):
    """A k x k convolution (the stem: 3 -> 16 channels, stride 2), SAME padding,
    as im2col from strided views + one matrix product into a contiguous output
    (~2x ``F.convolution_2d``, whose tensordot leaves a transposed view)."""
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    oh, ow = -(-h // stride), -(-w // stride)
    padded = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols = xp.empty((n, c, k, k, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    y = xp.matmul(W.reshape(o, c * k * k), cols.reshape(n, c * k * k, oh * ow))
    return y.reshape(n, o, oh, ow)


def _depthwise_fast(x, W, stride):
    """Multiplier-1 depthwise convolution (``W``: (1, C, k, k)), SAME padding.

    CPU, maps of 1024+ pixels: OpenCV's ``filter2D`` per channel (a correlation,
    as in TensorFlow; zero border = SAME padding; stride 2 = every other output
    of the stride-1 result, starting where SAME's asymmetric padding puts the
    first window).  Otherwise the input is zero-padded once into a flat buffer
    in which every kernel tap is a strided view at a fixed offset, and the output
    is the sum of the k*k views scaled per channel (cropped view).  Both beat
    im2col several times; filter2D beats the views ~2x on large maps and loses on
    small ones (23x27), hence the threshold.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    k = W.shape[2]
    if k == 1:
        return x * W.reshape(1, c, 1, 1)
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    oh, ow = -(-h // stride), -(-w // stride)
    if xp is numpy and h * w >= 1024 and k % 2 == 1:
        out = numpy.empty((n, c, oh, ow), dtype=x.dtype)
        r0, c0 = k // 2 - top, k // 2 - left  # stride-1 output of the first window
        filter2d, border = cv2.filter2D, cv2.BORDER_CONSTANT  # ~3400 calls a forward
        for i in range(n):
            for src, kernel, dst in zip(x[i], W[0], out[i]):
                if stride == 1:
                    filter2d(src, -1, kernel, dst, (-1, -1), 0, border)
                else:
                    dst[...] = filter2d(src, -1, kernel, None, (-1, -1), 0,
                                        border)[r0::stride, c0::stride]
        return out
    taps = xp.tile(W.reshape(c, k * k), (n, 1))  # (N*C, k*k)
    width = left + w + right
    length = oh * width  # outputs per channel, garbage columns included
    last = (k - 1) * width + (k - 1) + stride * (length - 1)  # furthest index read
    rows = max(top + h + bottom, last // width + 1)
    buf = xp.zeros((n * c, rows, width), dtype=x.dtype)
    buf[:, top:top + h, left:left + w] = x.reshape(n * c, h, w)
    flat = buf.reshape(n * c, rows * width)
    y = xp.empty((n * c, length), dtype=x.dtype)
    tmp = xp.empty_like(y)
    for t in range(k * k):
        offset = (t // k) * width + t % k
        view = flat[:, offset:offset + stride * (length - 1) + 1:stride]
        if t == 0:
            xp.multiply(view, taps[:, :1], out=y)
        else:
            xp.multiply(view, taps[:, t:t + 1], out=tmp)
            y += tmp
    return y.reshape(n, c, oh, width)[:, :, :, :ow]


def _instance_norm_fast(x, gamma, beta, eps, relu6):
    """Per-image, per-channel normalisation (two-pass variance), optionally
    followed by ReLU6, on a new array."""
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    y = x.reshape(n * c, h * w)  # (a copy when x is a cropped view)
    y = y - y.mean(axis=1, keepdims=True)
    var = xp.einsum('ij,ij->i', y, y) / (h * w)
    y *= (xp.tile(gamma, n) / xp.sqrt(var + eps))[:, None]
    y += xp.tile(beta, n)[:, None]
    if relu6:
        xp.clip(y, 0, 6, out=y)
    return y.reshape(n, c, h, w)


def _resize_fast(x, size):
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    mh = xp.asarray(interpolation_matrix_tf_legacy(size[0], h, x.dtype))
    mw = xp.asarray(interpolation_matrix_tf_legacy(size[1], w, x.dtype))
    y = xp.matmul(x.reshape(n * c * h, w), mw.T).reshape(n * c, h, size[1])
    return xp.matmul(mh, y).reshape(n, c, size[0], size[1])


def interpolation_matrix_tf_legacy(out_size, in_size, dtype=numpy.float32):
    """``(out_size, in_size)`` matrix of TensorFlow's legacy bilinear resize on one
    axis: source = dst * in / out, floor, the next pixel clamped to the edge."""
    m = numpy.zeros((out_size, in_size), dtype=numpy.float64)
    scale = in_size / out_size
    for d in range(out_size):
        src = d * scale
        lo = int(numpy.floor(src))
        hi = min(lo + 1, in_size - 1)
        frac = src - lo
        m[d, lo] += 1 - frac
        m[d, hi] += frac
    return m.astype(dtype)


def resize_bilinear_tf_legacy(x, size):
    """TensorFlow's ``ResizeBilinear(align_corners=False, half_pixel_centers=False)``
    of ``x`` (NCHW) to ``size`` = (H, W), differentiable.

    Not ``F.resize_images``: its CPU code uses the removed ``numpy.float`` under
    numpy 1.26, and it implements half-pixel centres, which differ from this
    legacy mode by up to ~0.5 of the input range.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    mh = xp.asarray(interpolation_matrix_tf_legacy(size[0], h, x.dtype))
    mw = xp.asarray(interpolation_matrix_tf_legacy(size[1], w, x.dtype))
    y = F.reshape(x, (n * c * h, w))
    y = F.matmul(y, mw, transb=True)                     # (n*c*h, W)
    y = F.reshape(y, (n * c, h, size[1]))
    y = F.matmul(F.broadcast_to(mh, (n * c,) + mh.shape), y)  # (n*c, H, W)
    return F.reshape(y, (n, c, size[0], size[1]))


class InstanceNormalization(chainer.Link):
    """Per-image, per-channel normalisation over H x W with a learned scale and
    shift: what the graph's training-mode ``FusedBatchNorm`` computes for one
    image (biased variance, eps 1e-3).  Same in training and inference."""

    def __init__(self, size, eps=BN_EPS):
        super(InstanceNormalization, self).__init__()
        self.eps = eps
        with self.init_scope():
            self.gamma = chainer.Parameter(numpy.ones(size, dtype=numpy.float32))
            self.beta = chainer.Parameter(numpy.zeros(size, dtype=numpy.float32))

    def forward(self, x):
        mean = F.mean(x, axis=(2, 3), keepdims=True)
        centred = x - F.broadcast_to(mean, x.shape)
        var = F.mean(F.square(centred), axis=(2, 3), keepdims=True)
        y = centred * F.broadcast_to(F.rsqrt(var + self.eps), x.shape)
        gamma = F.broadcast_to(F.reshape(self.gamma, (1, -1, 1, 1)), x.shape)
        beta = F.broadcast_to(F.reshape(self.beta, (1, -1, 1, 1)), x.shape)
        return y * gamma + beta


class MobileNetV2PoseNet(chainer.Chain):
    """``model(x) -> (pafs, heatmaps)``: lists of the 6 stages' outputs."""

    insize = 368
    stride = 8
    n_stages = N_STAGES

    def __init__(self):
        super(MobileNetV2PoseNet, self).__init__()
        self.tf_nodes = {}  # link name -> the TensorFlow node it comes from
        self._blocks = []
        with self.init_scope():
            self._conv('Conv', 3, STEM_CHANNELS, 3, 'MobilenetV2/Conv/Conv2D')
            self._instance_norm('Conv_bn', STEM_CHANNELS, 'MobilenetV2/Conv')
            channels = STEM_CHANNELS
            for name, expansion, out_channels, stride in BLOCKS:
                scope = 'MobilenetV2/' + name
                hidden = channels * expansion
                if expansion != 1:
                    self._conv(name + '_expand', channels, hidden, 1, scope + '/expand/Conv2D')
                    self._instance_norm(name + '_expand_bn', hidden, scope + '/expand')
                self._depthwise(name + '_depthwise', hidden, 3, scope + '/depthwise/depthwise')
                self._instance_norm(name + '_depthwise_bn', hidden, scope + '/depthwise')
                self._conv(name + '_project', hidden, out_channels, 1, scope + '/project/Conv2D')
                self._instance_norm(name + '_project_bn', out_channels, scope + '/project')
                residual = stride == 1 and channels == out_channels
                self._blocks.append((name, expansion != 1, stride, residual))
                channels = out_channels
            feature_channels = dict((b[0], b[2]) for b in BLOCKS)
            self.feature_channels = (feature_channels[FINE_BLOCK]
                                     + feature_channels[COARSE_BLOCK])
            for stage in range(1, N_STAGES + 1):
                for branch, out in sorted(BRANCH_OUT.items()):
                    in_ch = self.feature_channels if stage == 1 else \
                        self.feature_channels + N_PAFS + N_HEATMAPS
                    widths = (STAGE1_WIDTHS if stage == 1 else STAGE_WIDTHS) + [out]
                    for i, (k, width) in enumerate(zip(STAGE_KSIZES, widths), 1):
                        name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
                        scope = 'Openpose/' + name
                        self._depthwise(name + '_depthwise', in_ch, k,
                                        scope + '_depthwise/depthwise')
                        self._conv(name + '_pointwise', in_ch, width, 1,
                                   scope + '_pointwise/Conv2D')
                        self._batch_norm(name + '_pointwise_bn', width,
                                         scope + '_pointwise/BatchNorm/FusedBatchNorm')
                        in_ch = width

    # -- construction helpers (called inside init_scope) --
    def _conv(self, name, in_ch, out_ch, ksize, tf_node):
        setattr(self, name, L.Convolution2D(in_ch, out_ch, ksize, nobias=True))
        self.tf_nodes[name] = tf_node

    def _depthwise(self, name, channels, ksize, tf_node):
        setattr(self, name, L.DepthwiseConvolution2D(channels, 1, ksize, nobias=True))
        self.tf_nodes[name] = tf_node

    def _instance_norm(self, name, size, scope):
        setattr(self, name, InstanceNormalization(size))
        self.tf_nodes[name] = scope + '/BatchNorm/FusedBatchNorm'

    def _batch_norm(self, name, size, tf_node):
        setattr(self, name, L.BatchNormalization(size, eps=BN_EPS))
        self.tf_nodes[name] = tf_node

    # -- forward --
    def forward(self, x):
        """``(pafs, heatmaps)``: lists of the 6 stages' (N, 38, h, w) and
        (N, 19, h, w) outputs, h = ceil(H / 8), w = ceil(W / 8)."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1 \
                or x.dtype != numpy.float32:
            raise ValueError('MobileNetV2PoseNet expects a float32 (N, 3, H, W) BGR batch, '
                             'got %s %s' % (x.dtype, tuple(x.shape)))
        # Inference without a graph takes the array fast paths (same function).
        fast = not chainer.config.train and not chainer.config.enable_backprop
        if fast and isinstance(x, chainer.Variable):
            x = x.array
        feature = self.features(x, fast)
        pafs, heatmaps = [], []
        h = feature
        for stage in range(1, N_STAGES + 1):
            paf = self.branch(stage, 'L1', h, fast)
            heatmap = self.branch(stage, 'L2', h, fast)
            pafs.append(paf)
            heatmaps.append(heatmap)
            if stage < N_STAGES:
                h = self._concat((paf, heatmap, feature), fast)
        if fast:
            pafs = [chainer.Variable(a, requires_grad=False) for a in pafs]
            heatmaps = [chainer.Variable(a, requires_grad=False) for a in heatmaps]
        return pafs, heatmaps

    def features(self, x, fast=False):
        """The 64-channel stride-8 features: expanded_conv_5's output and
        expanded_conv_12's (stride 16) upsampled to its size, concatenated."""
        h = self._conv_norm('Conv', x, 2, True, fast)
        fine = None
        for name, has_expand, stride, residual in self._blocks:
            y = h
            if has_expand:
                y = self._conv_norm(name + '_expand', y, 1, True, fast)
            y = self._conv_norm(name + '_depthwise', y, stride, True, fast)
            y = self._conv_norm(name + '_project', y, 1, False, fast)
            h = h + y if residual else y
            if name == FINE_BLOCK:
                fine = h
        if fast:
            coarse = _resize_fast(h, fine.shape[2:])
        else:
            coarse = resize_bilinear_tf_legacy(h, fine.shape[2:])
        return self._concat((fine, coarse), fast)

    def branch(self, stage, branch, h, fast=False):
        """One branch of one stage: 5 x (depthwise, pointwise, batch norm, ReLU),
        no ReLU at the end."""
        for i in range(1, len(STAGE_KSIZES) + 1):
            name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
            h = self._separable(name, h, i < len(STAGE_KSIZES), fast)
        return h

    def _conv_norm(self, name, h, stride, relu6, fast):
        """Backbone: convolution or depthwise convolution ``name``, its per-image
        normalisation ``name + '_bn'``, then ReLU6 if asked."""
        conv, norm = self[name], self[name + '_bn']
        depthwise = isinstance(conv, L.DepthwiseConvolution2D)
        if fast:
            W, gamma, beta = conv.W.array, norm.gamma.array, norm.beta.array
            if depthwise:
                h = _depthwise_fast(h, W, stride)
            elif W.shape[2:] == (1, 1) and stride == 1:
                h = _pointwise_fast(h, W.reshape(W.shape[:2]))
            else:
                h = _conv_fast(h, W, stride)
            return _instance_norm_fast(h, gamma, beta, norm.eps, relu6)
        h = (depthwise_same if depthwise else conv_same)(h, conv.W, stride)
        h = norm(h)
        return F.clipped_relu(h, 6.0) if relu6 else h

    def _separable(self, name, h, relu, fast):
        """Refinement: ``name + '_depthwise'``, ``name + '_pointwise'``, its batch
        norm, then ReLU if asked.  The fast path folds the batch norm's stored
        statistics (and a 1x1 depthwise kernel) into the pointwise weights."""
        dw, pw, bn = self[name + '_depthwise'], self[name + '_pointwise'], \
            self[name + '_pointwise_bn']
        if fast:
            xp = backend.get_array_module(h)
            scale = bn.gamma.array / xp.sqrt(bn.avg_var + bn.eps)
            shift = bn.beta.array - bn.avg_mean * scale
            W = pw.W.array.reshape(pw.W.shape[:2]) * scale[:, None]
            if dw.W.shape[2:] == (1, 1):
                W = W * dw.W.array.reshape(1, -1)
            else:
                h = _depthwise_fast(h, dw.W.array, 1)
            h = _pointwise_fast(h, W, shift)
            return xp.maximum(h, 0, out=h) if relu else h
        h = bn(conv_same(depthwise_same(h, dw.W), pw.W))
        return F.relu(h) if relu else h

    @staticmethod
    def _concat(xs, fast):
        if fast:
            return backend.get_array_module(xs[0]).concatenate(xs, axis=1)
        return F.concat(xs, axis=1)
