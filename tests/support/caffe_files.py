"""Caffe files for tests, benches and CI: enough of the prototxt text format to read the
CMU deploy files (``parse_prototxt``, ``conv_layers_from_prototxt``, ``prototxt_with_input``)
and a caffemodel writer (``write_caffemodel``, ``random_conv_weights``), so that random-weight
caffemodels prove the Chainer ports against ``cv2.dnn`` and exercise ``weights_io``'s reader.
Nothing outside tests/, bench/ and .ci/ needs them; the field numbers are ``weights_io``'s.
"""
import re

import numpy as np

import protowire as pw
from cli import atomic_output
from weights_io import (_BLOB_DATA, _BLOB_SHAPE, _LAYER_BLOBS, _LAYER_NAME, _LAYER_TYPE,
                        _NET_LAYER, _NET_LAYERS_V1, _V1_BLOBS, _V1_NAME, _V1_TYPE)

# V1 LayerType enum value of a convolution (caffe.proto)
V1_CONVOLUTION = 4

# --- prototxt text format --------------------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*'  # blanks and comments are skipped
                    r'|(?P<t>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}:]|[^\s{}:#"\']+)')


def parse_prototxt(text):
    """Protobuf text format -> nested ``{field: [values]}`` (messages are dicts).

    Scalars stay strings except numbers, which become int/float.
    """
    tokens = [m.group('t') for m in _TOKEN.finditer(text) if m.group('t')]
    pos = 0

    def scalar(tok):
        if tok[0] in '"\'':
            return tok[1:-1]
        for conv in (int, float):
            try:
                return conv(tok)
            except ValueError:
                pass
        return tok

    def message(end_brace):
        nonlocal pos
        msg = {}
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == '}':
                if not end_brace:
                    raise ValueError('unbalanced } in prototxt')
                pos += 1
                return msg
            key = tok
            pos += 1
            if pos < len(tokens) and tokens[pos] == ':':
                pos += 1
            if pos < len(tokens) and tokens[pos] == '{':
                pos += 1
                msg.setdefault(key, []).append(message(True))
            else:
                msg.setdefault(key, []).append(scalar(tokens[pos]))
                pos += 1
        if end_brace:
            raise ValueError('unbalanced { in prototxt')
        return msg

    return message(False)


def _one(msg, key, default=None):
    vals = msg.get(key)
    return vals[0] if vals else default


def conv_layers_from_prototxt(text):
    """The convolution layers of a deploy prototxt: ``[(name, out, in, kh, kw)]``.

    Input channels are inferred through ReLU / Pooling / Dropout / Concat.
    Both the ``layer`` and the V1 ``layers`` syntax are understood.
    """
    net = parse_prototxt(text)
    layers = net.get('layer', []) + net.get('layers', [])
    channels = {}
    inputs = net.get('input', [])
    dims = net.get('input_dim', [])
    if inputs:
        channels[inputs[0]] = dims[1] if len(dims) > 1 else 3
    for shape in net.get('input_shape', []):
        channels[inputs[0]] = shape['dim'][1]
    out = []
    for layer in layers:
        typ = str(_one(layer, 'type')).upper()
        bottoms, tops = layer.get('bottom', []), layer.get('top', [])
        if typ == 'CONVOLUTION':
            p = _one(layer, 'convolution_param')
            k = _one(p, 'kernel_size')
            kh, kw = _one(p, 'kernel_h', k), _one(p, 'kernel_w', k)
            if _one(p, 'group', 1) != 1 or _one(p, 'stride', 1) != 1:
                raise ValueError('layer %s: only group 1, stride 1 supported'
                                 % _one(layer, 'name'))
            out.append((_one(layer, 'name'), _one(p, 'num_output'),
                        channels[bottoms[0]], kh, kw))
            channels[tops[0]] = _one(p, 'num_output')
        elif typ == 'CONCAT':
            channels[tops[0]] = sum(channels[b] for b in bottoms)
        elif typ in ('RELU', 'POOLING', 'DROPOUT', 'SOFTMAX'):
            channels[tops[0]] = channels[bottoms[0]]
        elif typ in ('INNERPRODUCT', 'INNER_PRODUCT'):
            channels[tops[0]] = _one(_one(layer, 'inner_product_param'), 'num_output')
    return out


def write_caffemodel(path, layers, v1=False):
    """Write ``[(name, [blob arrays])]`` as a Caffe ``NetParameter`` file.

    Every layer is a same-padded convolution.  V2 files get ``layer { name
    type: "Convolution" bottom top convolution_param blobs { shape data } }``;
    V1 files get ``layers { ... type: CONVOLUTION blobs { num channels height
    width data } }`` like the 2014 VGG release.
    """
    with atomic_output(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(pw.enc_bytes(1, b'net'))
            bottom = 'data'  # a plain chain of layers: enough for loading, not a real graph
            for name, blobs in layers:
                parts = []
                for arr in blobs:
                    arr = np.asarray(arr, dtype=np.float32)
                    if v1:
                        dims = (1,) * (4 - arr.ndim) + arr.shape
                        hdr = b''.join(pw.enc_field(i + 1, pw.VARINT, d)
                                       for i, d in enumerate(dims))
                    else:
                        shape = b''.join(pw.enc_field(1, pw.VARINT, d) for d in arr.shape)
                        hdr = pw.enc_bytes(_BLOB_SHAPE, shape)
                    parts.append((hdr, arr))
                blob_bytes = [pw.enc_bytes(_V1_BLOBS if v1 else _LAYER_BLOBS,
                                           hdr + pw.enc_packed_float32(_BLOB_DATA, arr))
                              for hdr, arr in parts]
                # convolution_param {num_output, pad, kernel_size}, like real
                # files (chainer's CaffeFunction needs it), 'same' padding
                w = np.asarray(blobs[0])
                conv = (pw.enc_field(1, pw.VARINT, w.shape[0])
                        + pw.enc_field(3, pw.VARINT, w.shape[-1] // 2)
                        + pw.enc_field(4, pw.VARINT, w.shape[-1]))
                if v1:
                    head = (pw.enc_bytes(2, bottom.encode()) + pw.enc_bytes(3, name.encode())
                            + pw.enc_bytes(_V1_NAME, name.encode())
                            + pw.enc_field(_V1_TYPE, pw.VARINT, V1_CONVOLUTION)
                            + pw.enc_bytes(10, conv))
                else:
                    head = (pw.enc_bytes(_LAYER_NAME, name.encode())
                            + pw.enc_bytes(_LAYER_TYPE, b'Convolution')
                            + pw.enc_bytes(3, bottom.encode()) + pw.enc_bytes(4, name.encode())
                            + pw.enc_bytes(106, conv))
                bottom = name
                body = head + b''.join(blob_bytes)
                f.write(pw.enc_bytes(_NET_LAYERS_V1 if v1 else _NET_LAYER, body))


def random_conv_weights(conv_layers, seed=0, bias_std=0.1):
    """He-initialised random ``[(name, [W, b])]`` for ``conv_layers_from_prototxt``.

    Used by tests and bench: with std sqrt(2 / fan_in) activations keep their
    scale through the ReLU stacks, so outputs are neither exploding nor zero.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name, n_out, n_in, kh, kw in conv_layers:
        std = np.float32(np.sqrt(2.0 / (n_in * kh * kw)))
        w = rng.standard_normal((n_out, n_in, kh, kw), dtype=np.float32) * std
        b = rng.standard_normal(n_out, dtype=np.float32) * np.float32(bias_std)
        out.append((name, [w, b]))
    return out


def prototxt_with_input(text, height, width):
    """A deploy prototxt with its (first) input resized to 1 x C x height x width.

    Handles ``input_dim:`` lines (CMU files) and ``input_shape { dim }`` blocks.
    """
    dims = iter([1, None, height, width])
    pattern = re.compile(r'^(\s*input_dim\s*:\s*)(\d+)', re.M)
    count = [0]

    def repl(m):
        count[0] += 1
        if count[0] > 4:
            return m.group(0)
        d = next(dims)
        return m.group(1) + (m.group(2) if d is None else str(d))
    out = pattern.sub(repl, text)
    if count[0] < 4:
        raise ValueError('prototxt has no 4 input_dim lines')
    return out
