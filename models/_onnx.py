"""ONNX graphs of the pose nets, written with ``onnx.helper`` straight from the links' weights.

``to_onnx(model, arch)`` builds the graph node for node as the Chainer forward reads the
nets' layer tables (not traced with onnx-chainer: that package declares chainer<7 and
onnx<1.7, breaks with onnx>=1.16, and freezes the MobileNet backbone's per-image batch norm
with the export sample's statistics).  One input ``x`` (float32 N x 3 x H x W, prepared as
for the Chainer net, dynamic N, H and W) and every stage's outputs, named as the Chainer net
returns them (``pafs_1 .. pafs_6``, ``heatmaps_1 .. heatmaps_6``); the arch in the metadata.

* CMU nets: Conv (+ ReLU; the 7x7 ones, and 3x3 ones with 256+ input channels, as
  Winograd F(6, r) along the width, see WINOGRAD), 2x2 MaxPool with ``ceil_mode`` (Caffe's
  rounding), Concat (the stages' inputs with zero channels up to a multiple of
  CHANNEL_BLOCK, and zero weights for them: the same sums, in onnxruntime's fast blocked
  layout).
* MobileNet: TensorFlow ``SAME`` padding is ``auto_pad=SAME_UPPER``; the backbone's
  training-mode batch norm is ``InstanceNormalization`` (each image normalised with its own
  statistics, as TensorFlow did); the refinement batch norms are inference
  ``BatchNormalization``; ReLU6 is ``Clip``; the legacy TensorFlow bilinear resize is
  ``Resize(linear, asymmetric)`` to the fine feature map's size, read from the graph at run
  time.

tests/test_onnx_backend.py checks onnxruntime's outputs against the Chainer nets.
"""
import numpy as np

import cli
from entity import params

INSTALL_HINT = ('`make onnx` (pip install -r requirements-onnx.txt)')

OPSET = 17


def import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise cli.UserError('the onnx package is not installed: run %s' % INSTALL_HINT)
    return onnx, helper, numpy_helper


class _Graph(object):
    """Collects nodes and initialisers; every node gets a fresh output name.  The initialisers
    go straight into the model (``make_graph`` and ``make_model`` would copy them twice:
    three copies of the weights at once)."""

    def __init__(self):
        self.onnx, self.helper, self.numpy_helper = import_onnx()
        self.proto = self.onnx.ModelProto()
        self.nodes, self._n = [], 0

    def const(self, name, array, dtype=np.float32):
        tensor = self.numpy_helper.from_array(np.ascontiguousarray(array, dtype), name)
        self.proto.graph.initializer.add().CopyFrom(tensor)
        return name

    def shape_part(self, shape, start, stop, key):
        """``shape[start:stop]`` of a ``Shape`` output, as a graph value (``key``: a unique
        prefix for its two index constants)."""
        i64 = np.int64
        return self.op('Slice', [shape, self.const('%s%d' % (key, start), [start], i64),
                                 self.const('%s%d:' % (key, stop), [stop], i64)])

    def op(self, op_type, inputs, name=None, **attrs):
        self._n += 1
        out = name or '%s_%d' % (op_type.lower(), self._n)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def model(self, outputs, arch):
        h = self.helper
        tp = self.onnx.TensorProto
        model = self.proto
        graph = model.graph
        graph.name = arch
        graph.node.extend(self.nodes)
        graph.input.extend([h.make_tensor_value_info('x', tp.FLOAT, ['N', 3, 'H', 'W'])])
        graph.output.extend([h.make_tensor_value_info(name, tp.FLOAT, ['N', c, 'h', 'w'])
                             for name, c in outputs])
        model.opset_import.extend([h.make_opsetid('', OPSET)])
        model.producer_name = 'export_onnx.py'
        model.ir_version = min(self.onnx.IR_VERSION, 8)  # readable by onnxruntime >= 1.11
        h.set_model_props(model, {'arch': arch})
        return model


# ----------------------------------------------------------------------------- CMU nets

def _cmu_convs(g, chain, layers, h, relu_last=True, zero_inputs=0):
    """The convolutions ``layers`` on ``h``; the first one's input ends with ``zero_inputs``
    zero channels (see CHANNEL_BLOCK), which get zero weights."""
    from models.CocoPoseNet import POOL
    for i, layer in enumerate(layers):
        if layer == POOL:
            h = g.op('MaxPool', [h], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
            continue
        name = layer[0]
        link = getattr(chain, name)
        W = link.W.array
        if i == 0 and zero_inputs:
            W = np.concatenate([W, np.zeros((W.shape[0], zero_inputs) + W.shape[2:], W.dtype)], 1)
        k = W.shape[2]
        p = link.pad[0]
        m, min_channels = WINOGRAD.get(k, (0, 0))
        if m and W.shape[1] >= min_channels:
            h = _winograd_conv(g, h, W, link.b.array, name, m)
        else:
            h = g.op('Conv', [h, g.const(name + '/W', W), g.const(name + '/b', link.b.array)],
                     name=name, kernel_shape=[k, k], pads=[p, p, p, p])
        if relu_last or i < len(layers) - 1:
            h = g.op('Relu', [h])
    return h



# Convolutions as one-dimensional Winograd F(6, r) (Lavin & Gray 2016) along the width,
# direct along the height: onnxruntime has no Winograd of its own, and F(6, 7) needs 3.5x
# fewer multiplications than the direct 7x7 convolution (bench/RESULTS.md: the choice of m
# and of the layers).  In ONNX operators (a = 6 + r - 1 points):
#   input transform  Conv3d on (N, 1, C, H, W): a outputs, kernel 1x1xa, stride 6 along
#                    W -> (N, a, C, H, tW), i.e. channels (point, c) once reshaped;
#   products         grouped Conv (a groups: one C -> O convolution of kernel r x 1 per
#                    point, the r kernel rows), in onnxruntime's blocked layout;
#   output transform 1x1 Conv a -> 6 on (N, a, O*H, tW), then the 6 pixels interleaved
#                    back along W (Transpose, Reshape) and cropped to W; bias added last.
# WINOGRAD = {ksize: (m, least input channels)}: with few input channels the transforms
# cost more than they save.  Kernels are transformed in float64.
WINOGRAD = {7: (6, 0), 3: (6, 256)}
# the first a - 1 of them (and infinity) for F(m, r), a = m + r - 1
WINOGRAD_POINTS = (0, 1, -1, 2, -2, 1 / 2, -1 / 2, 3, -3, 1 / 3, -1 / 3)


def _winograd_conv(g, x, W, b, name, m):
    """``Conv(x, W, b)`` (W: O x C x r x r, stride 1, pad r // 2) by F(m, r) along the width
    (see WINOGRAD)."""
    i64 = np.int64
    n_out, n_in, r, _ = W.shape
    p = r // 2
    a = m + r - 1
    from models._fast import winograd_matrices
    AT, G, BT = winograd_matrices(m, r, WINOGRAD_POINTS[:a - 1])

    def dims(shape, start, stop, key):
        return g.shape_part(shape, start, stop, '%s/%s' % (name, key))
    x_shape = g.op('Shape', [x])
    v = g.op('Unsqueeze', [x, g.const(name + '/axis1', [1], i64)])  # N, 1, C, H, W
    v = g.op('Conv', [v, g.const(name + '/BT', BT.reshape(a, 1, 1, 1, a))],
             kernel_shape=[1, 1, a], strides=[1, 1, m], pads=[0, 0, p, 0, 0, p + m - 1])
    v_shape = g.op('Shape', [v])  # N, a, C, H, tW with tW = ceil(W / m)
    v = g.op('Reshape', [v, g.op('Concat', [dims(v_shape, 0, 1, 'n'),
                                           g.const(name + '/aC', [a * n_in], i64),
                                           dims(v_shape, 3, 5, 'htw')], axis=0)])
    # U[point, o, c, ky] = sum_kx G[point, kx] W[o, c, ky, kx] (a matmul: einsum took 0.7 s)
    U = np.matmul(W.astype(np.float64), G.T).transpose(3, 0, 1, 2).reshape(a * n_out, n_in, r, 1)
    y = g.op('Conv', [v, g.const(name + '/U', U)], group=a, kernel_shape=[r, 1],
             pads=[p, 0, p, 0])  # N, a * O, H, tW
    y = g.op('Reshape', [y, g.const(name + '/aOHtW', [0, a, -1, 0], i64)])
    y = g.op('Conv', [y, g.const(name + '/AT', AT.reshape(m, a, 1, 1))],
             kernel_shape=[1, 1])  # N, m, O * H, tW
    y = g.op('Transpose', [y], perm=[0, 2, 3, 1])  # N, O * H, tW, m
    y = g.op('Reshape', [y, g.op('Concat', [dims(x_shape, 0, 1, 'xn'),
                                           g.const(name + '/O', [n_out], i64),
                                           dims(x_shape, 2, 3, 'xh'),
                                           g.const(name + '/rest', [-1], i64)], axis=0)])
    y = g.op('Slice', [y, g.const(name + '/w0', [0], i64), dims(x_shape, 3, 4, 'xw'),
                       g.const(name + '/axis3', [3], i64)])  # N, O, H, W
    return g.op('Add', [y, g.const(name + '/b', b.reshape(n_out, 1, 1))], name=name)


# onnxruntime runs convolutions in its blocked layout (NCHWc, 16 channels a block with AVX-512)
# only when the input channels are a multiple of the block; the stages' inputs (185 channels
# for the body net, 199 face, 150 hand) get zero channels up to a multiple of 16 (and zero
# weights: the same sums).
CHANNEL_BLOCK = 16


def _zero_channels(g, like, n):
    """(N, n, h, w) float32 zeros, with the N, h, w of ``like``."""
    shape = g.op('Shape', [like])
    size = g.op('Concat', [g.shape_part(shape, 0, 1, 'zeros/'), g.const('zeros/c', [n], np.int64),
                           g.shape_part(shape, 2, 4, 'zeros/')], axis=0)
    return g.op('ConstantOfShape', [size])


def _export_cmu(g, model, arch):
    from models import CocoPoseNet as cpn
    from models import _cpm
    outputs = []
    n_maps = cpn.N_PAFS + cpn.N_HEATMAPS if arch == 'posenet' else model.n_maps
    front = cpn.FRONT if arch == 'posenet' else _cpm.FRONT
    feature = _cmu_convs(g, model, front, 'x')
    pad = -(n_maps + front[-1][2]) % CHANNEL_BLOCK  # stages 2-6: maps + feature map
    zeros = [_zero_channels(g, feature, pad)] if pad else []
    h, h_pad = feature, 0  # stage 1 sees the feature map alone
    if arch == 'posenet':
        for s, (l1, l2) in enumerate(model.stages, 1):
            h1 = _cmu_convs(g, model, l1, h, relu_last=False, zero_inputs=h_pad)
            h2 = _cmu_convs(g, model, l2, h, relu_last=False, zero_inputs=h_pad)
            p = g.op('Identity', [h1], name='pafs_%d' % s)
            m = g.op('Identity', [h2], name='heatmaps_%d' % s)
            outputs += [(p, cpn.N_PAFS), (m, cpn.N_HEATMAPS)]
            if s < len(model.stages):
                h, h_pad = g.op('Concat', [h1, h2, feature] + zeros, axis=1), pad
        # pafs_1..6 then heatmaps_1..6
        outputs = outputs[0::2] + outputs[1::2]
    else:
        for s, layers in enumerate(model.stages, 1):
            h = _cmu_convs(g, model, layers, h, relu_last=False, zero_inputs=h_pad)
            outputs.append((g.op('Identity', [h], name='heatmaps_%d' % s), model.n_maps))
            if s < len(model.stages):
                h, h_pad = g.op('Concat', [h, feature] + zeros, axis=1), pad
    return outputs


# ----------------------------------------------------------------------------- MobileNet

def _mn_conv(g, link, h, stride, name):
    W = link.W.array
    if W.shape[0] == 1 and type(link).__name__ == 'DepthwiseConvolution2D':
        c = W.shape[1]
        return g.op('Conv', [h, g.const(name + '/W', W.transpose(1, 0, 2, 3))], name=name,
                    kernel_shape=list(W.shape[2:]), strides=[stride, stride],
                    auto_pad='SAME_UPPER', group=c)
    return g.op('Conv', [h, g.const(name + '/W', W)], name=name,
                kernel_shape=list(W.shape[2:]), strides=[stride, stride], auto_pad='SAME_UPPER')


def _mn_conv_norm(g, model, name, h, stride, relu6):
    h = _mn_conv(g, model[name], h, stride, name)
    norm = model[name + '_bn']
    h = g.op('InstanceNormalization', [h, g.const(name + '_bn/gamma', norm.gamma.array),
                                       g.const(name + '_bn/beta', norm.beta.array)],
             epsilon=float(norm.eps))
    if relu6:
        h = g.op('Clip', [h, g.const(name + '/min', np.float32(0)),
                          g.const(name + '/max', np.float32(6))])
    return h


def _export_mobilenet(g, model):
    from models import MobileNetV2PoseNet as mn
    h = _mn_conv_norm(g, model, 'Conv', 'x', 2, True)
    fine = None
    for name, has_expand, stride, residual in model._blocks:
        y = h
        if has_expand:
            y = _mn_conv_norm(g, model, name + '_expand', y, 1, True)
        y = _mn_conv_norm(g, model, name + '_depthwise', y, stride, True)
        y = _mn_conv_norm(g, model, name + '_project', y, 1, False)
        h = g.op('Add', [h, y]) if residual else y
        if name == mn.FINE_BLOCK:
            fine = h
    # legacy TF ResizeBilinear of the coarse features to the fine ones' H x W
    nc = g.op('Slice', [g.op('Shape', [h]), g.const('rs/0', [0], np.int64),
                        g.const('rs/2', [2], np.int64)])
    hw = g.op('Slice', [g.op('Shape', [fine]), g.const('rs/2b', [2], np.int64),
                        g.const('rs/4', [4], np.int64)])
    sizes = g.op('Concat', [nc, hw], axis=0)
    coarse = g.op('Resize', [h, '', '', sizes], mode='linear',
                  coordinate_transformation_mode='asymmetric')
    feature = g.op('Concat', [fine, coarse], axis=1)
    pafs, heatmaps = [], []
    h = feature
    for stage in range(1, mn.N_STAGES + 1):
        outs = {}
        for branch in ('L1', 'L2'):
            b = h
            n = len(mn.STAGE_KSIZES)
            for i in range(1, n + 1):
                name = 'MConv_Stage%d_%s_%d' % (stage, branch, i)
                b = _mn_conv(g, model[name + '_depthwise'], b, 1, name + '_depthwise')
                b = _mn_conv(g, model[name + '_pointwise'], b, 1, name + '_pointwise')
                bn = model[name + '_pointwise_bn']
                b = g.op('BatchNormalization',
                         [b, g.const(name + '_bn/gamma', bn.gamma.array),
                          g.const(name + '_bn/beta', bn.beta.array),
                          g.const(name + '_bn/mean', bn.avg_mean),
                          g.const(name + '_bn/var', bn.avg_var)], epsilon=float(bn.eps))
                if i < n:
                    b = g.op('Relu', [b])
            outs[branch] = b
        pafs.append((g.op('Identity', [outs['L1']], name='pafs_%d' % stage), mn.N_PAFS))
        heatmaps.append((g.op('Identity', [outs['L2']], name='heatmaps_%d' % stage),
                         mn.N_HEATMAPS))
        if stage < mn.N_STAGES:
            h = g.op('Concat', [outs['L1'], outs['L2'], feature], axis=1)
    return pafs + heatmaps


def to_onnx(model, arch):
    """The ``onnx.ModelProto`` of a Chainer pose net ``model`` of architecture ``arch``."""
    if arch not in params['archs']:
        raise cli.UserError('unknown architecture %r (known: %s)'
                            % (arch, ', '.join(params['archs'])))
    g = _Graph()
    outputs = _export_mobilenet(g, model) if arch == 'mobilenet' else _export_cmu(g, model, arch)
    return g.model(outputs, arch)


