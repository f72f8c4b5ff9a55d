"""The CMU COCO body-pose network (Cao et al., CVPR'17) in Chainer.

Layer for layer as ``pose_deploy.prototxt`` of the CMU release (kept in
../shared/data/prototxt/coco_pose_deploy.prototxt): the first ten VGG-19
layers, conv4_3_CPM and conv4_4_CPM (the feature map F, 128 channels at stride
8), then six stages of two branches, L1 = 38 part affinity fields and L2 = 19
heatmaps (18 parts + background).  Stage 1 sees F; stages 2-6 see
concat(L1, L2, F) = 185 channels.  Link names are the Caffe layer names, so
converted CMU weights (convert_model.py) load with ``serializers.load_npz``.
"""
import collections

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from entity import params
from models import _fast, _gpu

N_PAFS = 38
N_HEATMAPS = 19
N_STAGES = 6
POOL = 'pool'

# VGG-19 (ImageNet, Simonyan & Zisserman) convolutions; all 3x3 pad 1, 2x2 max
# pooling between blocks.  CocoPoseNet shares the first ten (conv1_1 .. conv4_2).
VGG19_CONVS = [('conv1_1', 3, 64), ('conv1_2', 64, 64), POOL,
               ('conv2_1', 64, 128), ('conv2_2', 128, 128), POOL,
               ('conv3_1', 128, 256), ('conv3_2', 256, 256), ('conv3_3', 256, 256),
               ('conv3_4', 256, 256), POOL,
               ('conv4_1', 256, 512), ('conv4_2', 512, 512), ('conv4_3', 512, 512),
               ('conv4_4', 512, 512), POOL,
               ('conv5_1', 512, 512), ('conv5_2', 512, 512), ('conv5_3', 512, 512),
               ('conv5_4', 512, 512)]
_FRONT_END = VGG19_CONVS.index(('conv4_2', 512, 512)) + 1
VGG19_FRONT = [c[0] for c in VGG19_CONVS[:_FRONT_END] if c != POOL]

# (name, in, out, ksize) for the feature extractor; POOL = 2x2 max pooling.
FRONT = ([c if c == POOL else c + (3,) for c in VGG19_CONVS[:_FRONT_END]]
         + [('conv4_3_CPM', 512, 256, 3), ('conv4_4_CPM', 256, 128, 3)])


def branch(stage, limb):
    """The convolutions of one branch (limb 1 = PAFs, 2 = heatmaps) of one stage."""
    n_out = N_PAFS if limb == 1 else N_HEATMAPS
    if stage == 1:
        kernels = [(128, 3), (128, 3), (128, 3), (512, 1), (n_out, 1)]
        names = ['conv5_%d_CPM_L%d' % (i, limb) for i in range(1, 6)]
        n_in = 128
    else:
        kernels = [(128, 7)] * 5 + [(128, 1), (n_out, 1)]
        names = ['Mconv%d_stage%d_L%d' % (i, stage, limb) for i in range(1, 8)]
        n_in = N_PAFS + N_HEATMAPS + 128
    layers = []
    for name, (n, k) in zip(names, kernels):
        layers.append((name, n_in, n, k))
        n_in = n
    return layers


def conv_layers():
    """Every convolution of the net: ``[(name, in, out, ksize)]`` in Caffe order."""
    layers = [c for c in FRONT if c != POOL]
    for stage in range(1, N_STAGES + 1):
        layers += branch(stage, 1) + branch(stage, 2)
    return layers


def add_convs(chain, layers):
    """Register ``L.Convolution2D`` links named as in Caffe (same padding)."""
    with chain.init_scope():
        for name, n_in, n_out, k in layers:
            setattr(chain, name, L.Convolution2D(n_in, n_out, ksize=k, stride=1, pad=k // 2))


def use_fast_path(x):
    """True when a forward on ``x`` takes the CPU inference kernels of
    ``models/_fast.py``: NumPy input, ``chainer.config.train`` False and backprop
    disabled (``chainer.using_config('train', False)`` + ``chainer.no_backprop_mode()``).
    Training, or any forward that builds a graph, uses the Chainer functions."""
    if chainer.config.train or chainer.config.enable_backprop:
        return False
    return isinstance(x.array if isinstance(x, chainer.Variable) else x, np.ndarray)


def run_convs(chain, layers, h, relu_last=True, fast=False):
    """Apply ``layers`` in order (ReLU after each, except the last unless asked).

    ``fast``: ``h`` is a NumPy array and the result is one (see ``use_fast_path``);
    each layer's input is released as soon as its output exists.  CuPy input takes the
    GPU kernels of ``models/_gpu.py`` (training and inference).
    """
    gpu = not fast and _gpu.is_gpu_array(h)
    for i, layer in enumerate(layers):
        relu = relu_last or i < len(layers) - 1
        if fast:
            if layer == POOL:
                h = _fast.max_pool_2x2(h)
            else:
                link = getattr(chain, layer[0])
                h = _fast.conv2d(h, link.W.array, None if link.b is None else link.b.array,
                                 link.pad[0], relu)
            continue
        if layer == POOL:
            h = F.max_pooling_2d(h, ksize=2, stride=2)  # cover_all = Caffe's ceil mode
            continue
        if gpu:
            link = getattr(chain, layer[0])
            h = _gpu.convolution_2d(h, link.W, link.b, link.pad[0],
                                    act=_gpu.ACT_RELU if relu else _gpu.ACT_NONE)
            continue
        h = getattr(chain, layer[0])(h)
        if relu:
            h = F.relu(h)
    return h


def as_input(x, fast):
    """The forward's input as the fast path wants it (an array) or unchanged."""
    if fast and isinstance(x, chainer.Variable):
        return x.array
    return x


def as_outputs(arrays, fast):
    """Wrap fast-path arrays as Variables (the interface of the Chainer path)."""
    if not fast:
        return arrays
    return [chainer.Variable(a, requires_grad=False) for a in arrays]


class CocoPoseNet(chainer.Chain):
    """``pafs, heatmaps = CocoPoseNet()(x)``: lists of the six stages' outputs.

    ``x``: float32 NCHW BGR image normalised as x / 256 - 0.5.  Each PAF map has
    38 channels, each heatmap 19, at 1/8 of the input size.  Training uses
    every stage; inference the last (``pafs[-1], heatmaps[-1]``).
    """
    insize = params['insize']
    conv_layers = staticmethod(conv_layers)

    def __init__(self):
        super().__init__()
        add_convs(self, conv_layers())
        self.stages = [(branch(s, 1), branch(s, 2)) for s in range(1, N_STAGES + 1)]

    def forward(self, x):
        fast = use_fast_path(x)
        x = as_input(x, fast)
        feature_map = run_convs(self, FRONT, x, fast=fast)
        del x
        pafs, heatmaps = [], []
        h = feature_map
        for l1, l2 in self.stages:
            h1 = run_convs(self, l1, h, relu_last=False, fast=fast)
            h2 = run_convs(self, l2, h, relu_last=False, fast=fast)
            pafs.append(h1)
            heatmaps.append(h2)
            h = (np.concatenate if fast else F.concat)((h1, h2, feature_map), axis=1)
        return as_outputs(pafs, fast), as_outputs(heatmaps, fast)


def copy_vgg19_front(model, npz_path, name=None):
    """Copy the ImageNet VGG-19 layers conv1_1 .. conv4_2 into ``model``.

    ``npz_path``: ``convert_model.py vgg19 VGG_ILSVRC_19_layers.caffemodel
    vgg19.npz``'s output (keys ``conv1_1/W``, ``conv1_1/b``, ...), or those
    arrays as a dict (read from the caffemodel; ``name``: its file, for
    messages).  Raises ``cli.UserError`` naming the file, layer and shapes on
    any mismatch, before touching the model.
    """
    from cli import UserError
    if isinstance(npz_path, dict):
        arrays, npz_path = npz_path, name
    else:
        try:
            with np.load(npz_path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise UserError('%s: no such file' % npz_path)
        except (OSError, ValueError) as e:
            raise UserError('%s: not a readable npz file (%s)' % (npz_path, e))
    new = collections.OrderedDict()
    for name in VGG19_FRONT:
        link = getattr(model, name)
        for p in ('W', 'b'):
            key = '%s/%s' % (name, p)
            want = getattr(link, p).shape
            if key not in arrays:
                raise UserError('%s: layer %s: no array %s (not a VGG-19 npz from '
                                'convert_model.py vgg19?)' % (npz_path, name, key))
            if arrays[key].shape != want:
                raise UserError('%s: layer %s: %s has shape %s, %s expects %s'
                                % (npz_path, name, p, arrays[key].shape,
                                   type(model).__name__, want))
            new[(name, p)] = arrays[key]
    for (name, p), arr in new.items():
        param = getattr(getattr(model, name), p)
        param.array[...] = chainer.backend.get_array_module(param.array).asarray(arr)
