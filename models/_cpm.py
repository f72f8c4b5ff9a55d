"""The single-branch CPM network shared by the OpenPose face and hand models.

Layer for layer as openpose ``models/face/pose_deploy.prototxt`` and
``models/hand/pose_deploy.prototxt`` (../shared/data/prototxt): VGG-19 up to
conv5_2 without the fourth pooling (stride 8), conv5_3_CPM (128 channels, the
feature map F), stage 1 (conv6_1_CPM, conv6_2_CPM) and stages 2-6
(Mconv1..Mconv7_stageN on concat(previous maps, F)).  The two nets differ only
in the number of maps (face 71, hand 22).
"""
import chainer
import chainer.functions as F
import numpy

from models.CocoPoseNet import POOL, add_convs, as_input, as_outputs, run_convs, use_fast_path

FRONT = [('conv1_1', 3, 64, 3), ('conv1_2', 64, 64, 3), POOL,
         ('conv2_1', 64, 128, 3), ('conv2_2', 128, 128, 3), POOL,
         ('conv3_1', 128, 256, 3), ('conv3_2', 256, 256, 3), ('conv3_3', 256, 256, 3),
         ('conv3_4', 256, 256, 3), POOL,
         ('conv4_1', 256, 512, 3), ('conv4_2', 512, 512, 3), ('conv4_3', 512, 512, 3),
         ('conv4_4', 512, 512, 3), ('conv5_1', 512, 512, 3), ('conv5_2', 512, 512, 3),
         ('conv5_3_CPM', 512, 128, 3)]
N_STAGES = 6


def stage(n, n_maps):
    """The convolutions of stage ``n`` (1-based) of a net with ``n_maps`` outputs."""
    if n == 1:
        return [('conv6_1_CPM', 128, 512, 1), ('conv6_2_CPM', 512, n_maps, 1)]
    kernels = [(128, 7)] * 5 + [(128, 1), (n_maps, 1)]
    layers, n_in = [], 128 + n_maps
    for i, (n_out, k) in enumerate(kernels, 1):
        layers.append(('Mconv%d_stage%d' % (i, n), n_in, n_out, k))
        n_in = n_out
    return layers


class CPMNet(chainer.Chain):
    """``heatmaps = Net()(x)``: the six stages' maps (``n_maps`` channels each)."""
    n_maps = None

    @classmethod
    def conv_layers(cls):
        layers = [c for c in FRONT if c != POOL]
        for n in range(1, N_STAGES + 1):
            layers += stage(n, cls.n_maps)
        return layers

    def __init__(self):
        super().__init__()
        add_convs(self, self.conv_layers())
        self.stages = [stage(n, self.n_maps) for n in range(1, N_STAGES + 1)]

    def forward(self, x):
        fast = use_fast_path(x)
        x = as_input(x, fast)
        feature_map = run_convs(self, FRONT, x, fast=fast)
        del x
        heatmaps = []
        h = feature_map
        for layers in self.stages:
            h = run_convs(self, layers, h, relu_last=False, fast=fast)
            heatmaps.append(h)
            h = (numpy.concatenate if fast else F.concat)((h, feature_map), axis=1)
        return as_outputs(heatmaps, fast)
