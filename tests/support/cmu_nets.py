"""The CMU nets (and the VGG-19 they start from) as Caffe deploy prototxts, written from the
project's own layer tables (models/CocoPoseNet.py, models/_cpm.py), and random weights for
them.

CMU's prototxts may not be redistributed (CMU's non-commercial licence), yet the tests need
them to build random caffemodels and to run those through ``cv2.dnn.readNetFromCaffe``, the
independent reference of the Chainer ports.  ``deploy_prototxt`` writes the same networks:
``net_graph`` reduces a prototxt to its dataflow (each convolution with its parameters and
input, the net's outputs), and tests/test_models.py checks that the written graphs equal
the real prototxts' when ../shared holds them.
"""
from models import _cpm
from models import CocoPoseNet as coco
from support import caffe_files

ARCHS = ('posenet', 'facenet', 'handnet', 'vgg19')
# VGG-19's ImageNet classifier (fc6, fc7, fc8), not in the project's tables: only its
# convolutions initialise a net here
VGG19_FC = (4096, 4096, 1000)


def _block(v1, fields):
    """One ``layer {}`` (or V1 ``layers {}``) block from ``[(key, value or [sub-fields])]``."""
    def lines(items, indent):
        out = []
        for key, value in items:
            if isinstance(value, list):
                out.append('%s%s {' % (indent, key))
                out += lines(value, indent + '  ')
                out.append('%s}' % indent)
            else:
                out.append('%s%s: %s' % (indent, key, value))
        return out
    return '\n'.join(lines([('layers' if v1 else 'layer', fields)], '')) + '\n'


class _Writer(object):
    """Appends layers in Caffe's text format: the ``layer`` syntax, or ``v1``'s ``layers``
    with upper-case enum types (the 2014 VGG release)."""

    def __init__(self, name, input_name, height, width, v1=False):
        self.v1, self.input = v1, input_name
        self.text = ('name: "%s"\n' % name if name else '') + 'input: "%s"\n' % input_name
        self.text += ''.join('input_dim: %d\n' % d for d in (1, 3, height, width))

    def layer(self, name, typ, bottoms, top, **params):
        head = [('name', '"%s"' % name), ('type', typ.upper() if self.v1 else '"%s"' % typ)]
        flow = [('bottom', '"%s"' % b) for b in bottoms] + [('top', '"%s"' % top)]
        fields = (flow + head) if self.v1 else (head + flow)
        for key, sub in params.items():
            fields.append((key, list(sub.items())))
        self.text += _block(self.v1, fields)

    def conv(self, name, bottom, top, n_out, k):
        self.layer(name, 'Convolution', [bottom], top,
                   convolution_param={'num_output': n_out, 'pad': k // 2, 'kernel_size': k})

    def relu(self, name, blob):
        self.layer(name, 'ReLU', [blob], blob)

    def pool(self, name, bottom):
        self.layer(name, 'Pooling', [bottom], name,
                   pooling_param={'pool': 'MAX', 'kernel_size': 2, 'stride': 2})
        return name

    def concat(self, name, bottoms):
        self.layer(name, 'Concat', bottoms, name, concat_param={'axis': 1})
        return name

    def front(self, layers, relu_name, pool_name):
        """Convolutions, each followed by its in-place ReLU, and 2x2 max pooling; the
        output blob."""
        blob, pools = self.input, 0
        for item in layers:
            if item == coco.POOL:
                pools += 1
                blob = self.pool(pool_name % pools, blob)
            else:
                name, _, n_out, k = item
                self.conv(name, blob, name, n_out, k)
                self.relu(relu_name(name), name)
                blob = name
        return blob

    def stage(self, branches, bottom, relu_name, last_top=None):
        """Branches of one stage side by side, layer by layer (CMU's order), a ReLU after
        each convolution but the last; the branches' output blobs."""
        tops = []
        for i, layers in enumerate(zip(*branches)):
            for j, (name, _, n_out, k) in enumerate(layers):
                last = i == len(branches[j]) - 1
                top = last_top if last and last_top else name
                self.conv(name, tops[j] if i else bottom, top, n_out, k)
                if not last:
                    self.relu(relu_name(name), name)
                if i:
                    tops[j] = top
                else:
                    tops.append(top)
        return tops


def deploy_prototxt(arch, height=None, width=None):
    """The deploy prototxt of ``arch`` ('posenet', 'facenet', 'handnet': CMU's body, face and
    hand nets; 'vgg19': the 2014 ImageNet VGG-19 in the V1 format) for a 1 x 3 x height x
    width input (default 368 x 368, VGG-19's 224 x 224)."""
    size = 224 if arch == 'vgg19' else 368
    height, width = height or size, width or size
    if arch == 'posenet':
        w = _Writer(None, 'data', height, width)
        relu = lambda name: name.replace('conv', 'relu', 1)  # noqa: E731  (CMU's names)
        feature = w.front(coco.FRONT, relu, 'pool%d_stage1')
        h = feature
        for s in range(1, coco.N_STAGES + 1):
            tops = w.stage([coco.branch(s, 1), coco.branch(s, 2)], h, relu)
            if s < coco.N_STAGES:
                h = w.concat('concat_stage%d' % (s + 1), tops + [feature])
        return w.text
    if arch in ('facenet', 'handnet'):
        from models.FaceNet import FaceNet
        from models.HandNet import HandNet
        n_maps = (FaceNet if arch == 'facenet' else HandNet).n_maps
        w = _Writer(None, 'image', height, width)
        relu = lambda name: name + '_re'  # noqa: E731  (the face prototxt's names)
        feature = w.front(_cpm.FRONT, relu, 'pool%d')
        h = feature
        for s in range(1, _cpm.N_STAGES + 1):
            # the last map is the blob net_output in CMU's files (and so in OpenCV)
            last = 'net_output' if s == _cpm.N_STAGES else None
            (top,) = w.stage([_cpm.stage(s, n_maps)], h, relu, last_top=last)
            if s < _cpm.N_STAGES:
                h = w.concat('features_in_stage_%d' % (s + 1), [top, feature])
        return w.text
    if arch == 'vgg19':
        w = _Writer('VGG_ILSVRC_19_layers', 'data', height, width, v1=True)
        convs = [c if c == coco.POOL else c + (3,) for c in coco.VGG19_CONVS] + [coco.POOL]
        blob = w.front(convs, lambda name: name.replace('conv', 'relu', 1), 'pool%d')
        for i, n_out in enumerate(VGG19_FC, 6):
            fc = 'fc%d' % i
            w.layer(fc, 'Inner_Product', [blob], fc, inner_product_param={'num_output': n_out})
            blob = fc
            if i < 8:
                w.relu('relu%d' % i, fc)
                w.layer('drop%d' % i, 'Dropout', [fc], fc, dropout_param={'dropout_ratio': 0.5})
        w.layer('prob', 'Softmax', [blob], 'prob')
        return w.text
    raise ValueError('no prototxt for %r (one of %s)' % (arch, ', '.join(ARCHS)))


def conv_layers(arch):
    """``caffe_files.conv_layers_from_prototxt`` of ``deploy_prototxt(arch)``:
    ``[(name, out, in, kh, kw)]`` in Caffe order."""
    return caffe_files.conv_layers_from_prototxt(deploy_prototxt(arch))


def random_net(cls, seed=0):
    """A ``cls`` (CocoPoseNet, FaceNet, HandNet) with He-initialised random weights."""
    model = cls()
    convs = [(name, n_out, n_in, k, k) for name, n_in, n_out, k in cls.conv_layers()]
    for name, (W, b) in caffe_files.random_conv_weights(convs, seed):
        getattr(model, name).W.array[...] = W
        getattr(model, name).b.array[...] = b
    return model


_DEFAULTS = {'pad': 0, 'stride': 1, 'group': 1, 'dilation': 1, 'bias_term': 'true'}


def net_graph(text):
    """A prototxt's dataflow, free of the names of its ReLU, pooling and concat layers and of
    training-only fields: ``{'input': (name, channels), 'convs': {name: (num_output,
    kernel, pad, stride, group, dilation, bias_term, input)}, 'outputs': [...]}``, where an
    input or output is an expression: a convolution's name, ``('relu', x)``, ``('pool',
    kind, size, stride, x)``, ``('concat', axis, (x, ...))``, ``('fc', n, x)``, ..."""
    net = caffe_files.parse_prototxt(text)

    def one(msg, key, default=None):
        return msg.get(key, [default])[0]

    (name,) = net['input']
    dims = net.get('input_dim') or one(net, 'input_shape')['dim']
    blobs = {name: 'input'}
    convs, used = {}, set()
    for layer in net.get('layer', []) + net.get('layers', []):
        typ = str(one(layer, 'type')).upper().replace('_', '')
        bottoms = [blobs[b] for b in layer.get('bottom', [])]
        used.update(repr(b) for b in bottoms)
        (top,) = layer['top']
        if typ == 'CONVOLUTION':
            p = one(layer, 'convolution_param')
            params = tuple(one(p, k, _DEFAULTS.get(k)) for k in
                           ('num_output', 'kernel_size', 'pad', 'stride', 'group', 'dilation',
                            'bias_term'))
            convs[one(layer, 'name')] = params + (bottoms[0],)
            blobs[top] = one(layer, 'name')
        elif typ == 'RELU':
            blobs[top] = ('relu', bottoms[0])
        elif typ == 'POOLING':
            p = one(layer, 'pooling_param')
            blobs[top] = ('pool', one(p, 'pool'), one(p, 'kernel_size'), one(p, 'stride'),
                          bottoms[0])
        elif typ == 'CONCAT':
            blobs[top] = ('concat', one(one(layer, 'concat_param', {}), 'axis', 1),
                          tuple(bottoms))
        elif typ == 'INNERPRODUCT':
            blobs[top] = ('fc', one(one(layer, 'inner_product_param'), 'num_output'), bottoms[0])
        elif typ == 'DROPOUT':
            blobs[top] = ('dropout', one(one(layer, 'dropout_param'), 'dropout_ratio'),
                          bottoms[0])
        elif typ == 'SOFTMAX':
            blobs[top] = ('softmax', bottoms[0])
        else:
            raise ValueError('layer %s: type %s not handled' % (one(layer, 'name'), typ))
    # the net's outputs: the blobs' final values that no layer reads
    outputs = sorted({repr(v) for v in blobs.values()} - used)
    return {'input': (name, dims[1]), 'convs': convs, 'outputs': outputs}
