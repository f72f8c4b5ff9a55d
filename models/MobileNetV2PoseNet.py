"""tf-pose-estimation's ``mobilenet_v2_small`` PAF network, ported to Chainer.

A COCO-trained OpenPose-style model (ildoonet/tf-pose-estimation,
``models/graph/mobilenet_v2_small/graph_opt.pb``, Apache-2.0): a MobileNetV2
backbone of width 0.5 and six two-branch refinement stages of depthwise-
separable convolutions, refine width 0.5.  The shipped weights are
``models/mobilenet_v2_small.npz`` (see models/README.md); ``tfgraph.py``
converts the frozen graph into this class.

Input: float32 NCHW, **BGR, raw 0..255** (no mean or scale).  Any H and W work;
the pose pipeline pads to a multiple of 16 (``entity.params['pose_archs']``).
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


def conv_same(link, x, stride=1):
    """An ``L.Convolution2D`` applied with TensorFlow ``SAME`` padding."""
    if link.W.shape[2:] == (1, 1) and stride == 1 and link.b is None \
            and not chainer.config.enable_backprop:
        # Inference fast path: a 1x1 convolution is one matrix product; Chainer's
        # im2col + tensordot path copies and transposes (see bench/bench_mobilenet.py).
        n, c, h, w = x.shape
        W = link.W.array.reshape(link.W.shape[0], c)
        xp = backend.get_array_module(x)
        y = xp.matmul(W, x.array.reshape(n, c, h * w))
        return chainer.Variable(y.reshape(n, -1, h, w), requires_grad=False)
    x, pad = _pad_same(x, link.W.shape[2], stride)
    return F.convolution_2d(x, link.W, link.b, stride=stride, pad=pad)


def depthwise_same(link, x, stride=1):
    """An ``L.DepthwiseConvolution2D`` (multiplier 1) with ``SAME`` padding."""
    ksize = link.W.shape[2]
    if not chainer.config.enable_backprop:
        return chainer.Variable(_depthwise_forward(x.array if isinstance(x, chainer.Variable)
                                                   else x, link.W.array, stride),
                                requires_grad=False)
    x, pad = _pad_same(x, ksize, stride)
    return F.depthwise_convolution_2d(x, link.W, link.b, stride=stride, pad=pad)


def _depthwise_forward(x, W, stride):
    """Inference path of a multiplier-1 depthwise convolution, SAME padding.

    The same sums as ``F.depthwise_convolution_2d``, computed as k*k shifted,
    per-channel-scaled slices of the padded input instead of Chainer's im2col +
    batched matmul, which is several times slower on CPU at these sizes
    (figures in bench/bench_mobilenet.py).
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    k = W.shape[2]
    weights = W[0]  # (C, k, k)
    if k == 1:
        return x * weights[:, 0, 0][None, :, None, None]
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    xpad = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = -(-h // stride), -(-w // stride)
    y = None
    tmp = xp.empty((n, c, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            window = xpad[:, :, i:i + stride * (oh - 1) + 1:stride,
                          j:j + stride * (ow - 1) + 1:stride]
            if y is None:
                y = window * weights[:, i, j][None, :, None, None]
            else:
                xp.multiply(window, weights[:, i, j][None, :, None, None], out=tmp)
                y += tmp
    return y


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
        if not chainer.config.enable_backprop:
            # Inference: the same arithmetic in place on one array (fewer passes).
            xp = backend.get_array_module(x)
            a = x.array if isinstance(x, chainer.Variable) else x
            mean = a.mean(axis=(2, 3), keepdims=True)
            y = a - mean
            var = xp.mean(xp.square(y), axis=(2, 3), keepdims=True)
            scale = self.gamma.array[None, :, None, None] / xp.sqrt(var + self.eps)
            y *= scale
            y += self.beta.array[None, :, None, None]
            return chainer.Variable(y, requires_grad=False)
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
    def features(self, x):
        """The 64-channel stride-8 features: expanded_conv_5's output and
        expanded_conv_12's (stride 16) upsampled to its size, concatenated."""
        h = F.clipped_relu(self.Conv_bn(conv_same(self.Conv, x, 2)), 6.0)
        fine = None
        for name, has_expand, stride, residual in self._blocks:
            y = h
            if has_expand:
                y = F.clipped_relu(self[name + '_expand_bn'](
                    conv_same(self[name + '_expand'], y)), 6.0)
            y = F.clipped_relu(self[name + '_depthwise_bn'](
                depthwise_same(self[name + '_depthwise'], y, stride)), 6.0)
            y = self[name + '_project_bn'](conv_same(self[name + '_project'], y))
            h = h + y if residual else y
            if name == FINE_BLOCK:
                fine = h
        coarse = resize_bilinear_tf_legacy(h, fine.shape[2:])
        return F.concat((fine, coarse), axis=1)

    def branch(self, stage, branch, h):
        for i in range(1, len(STAGE_KSIZES) + 1):
            name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
            h = depthwise_same(self[name + '_depthwise'], h)
            h = self[name + '_pointwise_bn'](conv_same(self[name + '_pointwise'], h))
            if i < len(STAGE_KSIZES):
                h = F.relu(h)
        return h

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError('MobileNetV2PoseNet expects a float32 (N, 3, H, W) BGR batch, '
                             'got shape %s' % (tuple(x.shape),))
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError('MobileNetV2PoseNet: empty image, shape %s' % (tuple(x.shape),))
        feature = self.features(x)
        pafs, heatmaps = [], []
        h = feature
        for stage in range(1, N_STAGES + 1):
            paf = self.branch(stage, 'L1', h)
            heatmap = self.branch(stage, 'L2', h)
            pafs.append(paf)
            heatmaps.append(heatmap)
            if stage < N_STAGES:
                h = F.concat((paf, heatmap, feature), axis=1)
        return pafs, heatmaps
