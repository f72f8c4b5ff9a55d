"""Proof that the Chainer nets are CMU's nets, layer for layer.

Random-weight caffemodels are built from the CMU deploy prototxts (written from our layer
tables by tests/support/cmu_nets.py, which equal CMU's real files: checked here when
../shared/data/prototxt holds them), converted with convert_model.py and run through both
our Chainer nets and OpenCV's independent Caffe importer (``cv2.dnn.readNetFromCaffe``) at
a reduced input size.
"""
import os

import chainer
import cv2
import numpy as np
import pytest

import convert_model
from models.CocoPoseNet import CocoPoseNet, VGG19_FRONT, copy_vgg19_front
from models.FaceNet import FaceNet
from models.HandNet import HandNet
from support import caffe_files
from support.cmu_nets import deploy_prototxt, net_graph
from support.testing import needs_cv2_caffe, shared_path

# small and not a multiple of 8: exercises Caffe's ceil-mode pooling
HEIGHT, WIDTH = 76, 60
TOL = 1e-4


# the real files in ../shared/data/prototxt (CMU's licence forbids shipping them)
CMU_PROTOTXT = {'posenet': 'coco_pose_deploy.prototxt', 'facenet': 'face_pose_deploy.prototxt',
                'handnet': 'hand_pose_deploy.prototxt',
                'vgg19': 'VGG_ILSVRC_19_layers_deploy.prototxt'}


def _cv2_forward(prototxt_text, caffemodel, x, outputs, tmp_path):
    proto = os.path.join(str(tmp_path), 'small.prototxt')
    with open(proto, 'w') as f:
        f.write(caffe_files.prototxt_with_input(prototxt_text, x.shape[2], x.shape[3]))
    net = cv2.dnn.readNetFromCaffe(proto, caffemodel)
    # Winograd 3x3 convolution trades ~1e-3 relative precision for speed; the
    # reference should be plain direct convolution.
    net.enableWinograd(False)
    net.setInput(x)
    return net.forward(outputs)


def _chainer_forward(model, x):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return model(x)


def _input(seed=1):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(1, 3, HEIGHT, WIDTH)).astype(np.float32)
    return img / 256 - 0.5


def _assert_close(ours, ref, what):
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, what
    scale = np.abs(ref).max()
    # non-trivial outputs: not zero, not constant, a spread of values
    assert scale > 1e-2 and ref.std() > 1e-3 * scale, (what, scale, ref.std())
    err = np.abs(ours - ref).max()
    assert err <= TOL * scale, '%s: max|diff| %.3g > %.0e x max|out| %.3g' % (what, err, TOL, scale)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return tmp_path_factory.mktemp('nets')


def _convert_random(work, arch, seed, v1=False, keep=None):
    text = deploy_prototxt(arch)
    convs = caffe_files.conv_layers_from_prototxt(text)
    if keep is not None:
        convs = [c for c in convs if c[0] in keep]
    caffemodel = str(work / (arch + '.caffemodel'))
    caffe_files.write_caffemodel(caffemodel, caffe_files.random_conv_weights(convs, seed), v1=v1)
    npz = str(work / (arch + '.npz'))
    convert_model.convert(arch, caffemodel, npz)
    return text, caffemodel, npz


@pytest.mark.parametrize('arch,cls,outputs', [
    ('posenet', CocoPoseNet,
     ['Mconv7_stage6_L1', 'Mconv7_stage6_L2', 'conv5_5_CPM_L1', 'Mconv7_stage3_L2']),
    # face and hand name Mconv7_stage6's output blob net_output (so does OpenCV)
    ('facenet', FaceNet, ['net_output', 'conv6_2_CPM']),
    ('handnet', HandNet, ['net_output', 'Mconv7_stage2']),
])
@needs_cv2_caffe
def test_net_matches_opencv_caffe(work, tmp_path, arch, cls, outputs):
    text, caffemodel, npz = _convert_random(work, arch, seed=len(arch))
    model = cls()
    chainer.serializers.load_npz(npz, model)  # strict: every link gets weights
    x = _input()
    refs = dict(zip(outputs, _cv2_forward(text, caffemodel, x, outputs, tmp_path)))
    ours = _chainer_forward(model, x)
    if arch == 'posenet':
        pafs, heatmaps = ours
        assert len(pafs) == len(heatmaps) == 6
        assert pafs[-1].shape == (1, 38, 10, 8) and heatmaps[-1].shape == (1, 19, 10, 8)
        got = {'Mconv7_stage6_L1': pafs[5], 'Mconv7_stage6_L2': heatmaps[5],
               'conv5_5_CPM_L1': pafs[0], 'Mconv7_stage3_L2': heatmaps[2]}
    else:
        assert len(ours) == 6 and ours[-1].shape == (1, cls.n_maps, 10, 8)
        got = {'net_output': ours[5], 'conv6_2_CPM': ours[0], 'Mconv7_stage2': ours[1]}
    for name in outputs:
        _assert_close(got[name].array, refs[name], '%s %s' % (arch, name))


@pytest.mark.parametrize('arch', sorted(CMU_PROTOTXT))
def test_written_prototxts_are_cmus(arch):
    """The prototxts the tests write from our layer tables are CMU's (and the VGG authors')
    networks: the same convolutions (name, size, padding, stride, input), ReLUs, pooling,
    concatenations and outputs, in the same order of convolutions."""
    with open(shared_path('prototxt', CMU_PROTOTXT[arch])) as f:
        real = f.read()
    ours = deploy_prototxt(arch)
    assert net_graph(ours) == net_graph(real)
    assert (caffe_files.conv_layers_from_prototxt(ours)
            == caffe_files.conv_layers_from_prototxt(real))


def test_link_names_and_shapes_are_the_prototxts():
    for cls, arch in [(CocoPoseNet, 'posenet'), (FaceNet, 'facenet'), (HandNet, 'handnet')]:
        convs = caffe_files.conv_layers_from_prototxt(deploy_prototxt(arch))
        ours = cls.conv_layers()
        assert len(convs) == len(ours) == len(set(n for n, *_ in ours))
        assert ({n: (o, i, k) for n, o, i, k, _ in convs}
                == {n: (o, i, k) for n, i, o, k in ours})
        assert sorted(n for n, _ in cls().namedlinks(skipself=True)) == sorted(
            '/' + n for n, *_ in ours)


@needs_cv2_caffe
def test_vgg19_v1_caffemodel_initialises_posenet_front(work, tmp_path):
    """The 2014 VGG-19 file is in the V1 ``layers`` format: convert it and copy
    conv1_1 .. conv4_2 into CocoPoseNet; its conv4_2 features equal OpenCV's."""
    text, caffemodel, npz = _convert_random(
        work, 'vgg19', seed=7, v1=True,
        keep=set(VGG19_FRONT) | {'conv5_1'})  # conv5_1: a layer the npz must skip
    with np.load(npz) as f:
        assert sorted(f.files) == sorted(n + s for n in VGG19_FRONT for s in ('/W', '/b'))
    model = CocoPoseNet()
    before = model.conv4_3_CPM.W.array.copy()
    copy_vgg19_front(model, npz)
    assert np.array_equal(model.conv4_3_CPM.W.array, before)  # only the VGG layers change
    # OpenCV runs the VGG prototxt cut after relu4_2 (fc6 needs 224x224)
    cut = text[:text.index('layers {\n  bottom: "conv4_2"\n  top: "conv4_3"')]
    x = _input(2)
    ref, = _cv2_forward(cut, caffemodel, x, ['relu4_2'], tmp_path)  # in place on conv4_2
    from models.CocoPoseNet import FRONT, run_convs
    front = FRONT[:FRONT.index(('conv4_2', 512, 512, 3)) + 1]
    with chainer.no_backprop_mode():
        h = run_convs(model, front, x)
    _assert_close(h.array, ref, 'vgg19 conv4_2')


def test_copy_vgg19_front_rejects_wrong_npz(tmp_path):
    from cli import UserError
    model = CocoPoseNet()
    bad = str(tmp_path / 'bad.npz')
    arrays = {n + '/W': getattr(model, n).W.array for n in VGG19_FRONT}
    arrays.update({n + '/b': getattr(model, n).b.array for n in VGG19_FRONT})
    arrays['conv3_2/W'] = np.zeros((256, 256, 1, 1), np.float32)
    np.savez(bad, **arrays)
    with pytest.raises(UserError, match=r'bad\.npz: layer conv3_2: W has shape \(256, 256, 1, 1\)'):
        copy_vgg19_front(model, bad)
    del arrays['conv3_2/W']
    np.savez(bad, **arrays)
    with pytest.raises(UserError, match=r'bad\.npz: layer conv3_2: no array conv3_2/W'):
        copy_vgg19_front(model, bad)
    with pytest.raises(UserError, match='no such file'):
        copy_vgg19_front(model, str(tmp_path / 'missing.npz'))
