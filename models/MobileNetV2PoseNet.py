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
import numpy
from chainer import backend

from models import _gpu, _mobilenet_fast as _mf
from models._mobilenet_table import (  # noqa: F401 (the structure table: this module's API)
    BLOCKS, BN_EPS, BRANCH_OUT, COARSE_BLOCK, FINE_BLOCK, N_HEATMAPS, N_PAFS, N_STAGES,
    STAGE1_WIDTHS, STAGE_KSIZES, STAGE_WIDTHS, STEM_CHANNELS, interpolation_matrix_tf_legacy,
    same_padding)



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
    # True: the refinement batch norms normalise with their stored statistics in training
    # too (fine-tuning trained weights, which were fitted to those statistics); False:
    # ordinary batch norm (batch statistics in training, running averages updated).
    frozen_bn_stats = False

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
        array = x.array if isinstance(x, chainer.Variable) else x
        if not chainer.config.train and not chainer.config.enable_backprop \
                and isinstance(array, numpy.ndarray):  # CPU inference kernels
            return tuple([chainer.Variable(a, requires_grad=False) for a in stages]
                         for stages in _mf.forward(self, array))
        if not chainer.config.train and not chainer.config.enable_backprop \
                and _gpu.is_gpu_array(array):  # GPU inference kernels (models/_gpu.py)
            return _gpu.mobilenet_inference(self, array)
        return self.forward_functions(x)

    def forward_functions(self, x):
        """``forward`` with Chainer's functions (differentiable, any device; the model
        in float64 too, for accuracy checks), without ``forward``'s input checks."""
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

    def features(self, x):
        """The 64-channel stride-8 features: expanded_conv_5's output and
        expanded_conv_12's (stride 16) upsampled to its size, concatenated."""
        h = self._conv_norm('Conv', x, 2, True)
        fine = None
        for name, has_expand, stride, residual in self._blocks:
            y = h
            if has_expand:
                y = self._conv_norm(name + '_expand', y, 1, True)
            y = self._conv_norm(name + '_depthwise', y, stride, True)
            y = self._conv_norm(name + '_project', y, 1, False)
            h = h + y if residual else y
            if name == FINE_BLOCK:
                fine = h
        coarse = resize_bilinear_tf_legacy(h, fine.shape[2:])
        return F.concat((fine, coarse), axis=1)

    def branch(self, stage, branch, h):
        """One branch of one stage: 5 x (depthwise, pointwise, batch norm, ReLU),
        no ReLU at the end."""
        for i in range(1, len(STAGE_KSIZES) + 1):
            name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
            dw, pw, bn = self[name + '_depthwise'], self[name + '_pointwise'], \
                self[name + '_pointwise_bn']
            h = conv_same(depthwise_same(h, dw.W), pw.W)
            if self.frozen_bn_stats:
                h = F.fixed_batch_normalization(h, bn.gamma, bn.beta, bn.avg_mean, bn.avg_var,
                                                bn.eps)
            else:
                h = bn(h)
            if i < len(STAGE_KSIZES):
                h = F.relu(h)
        return h

    def _conv_norm(self, name, h, stride, relu6):
        """Backbone: convolution or depthwise convolution ``name``, its per-image
        normalisation ``name + '_bn'``, then ReLU6 if asked."""
        conv, norm = self[name], self[name + '_bn']
        depthwise = isinstance(conv, L.DepthwiseConvolution2D)
        h = norm((depthwise_same if depthwise else conv_same)(h, conv.W, stride))
        return F.clipped_relu(h, 6.0) if relu6 else h
