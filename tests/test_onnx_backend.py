"""ONNX export (export_onnx.py) and the onnxruntime backend (onnx_backend.py).

Every net is exported from random (He-initialised) weights, or the shipped weights for the
embedded MobileNet, loaded in onnxruntime at several input sizes (one file: dynamic H and W)
and compared with the Chainer path within 1e-4 of the output's magnitude.  onnxruntime is
installed by ``make onnx`` (requirements-onnx.txt); without it the backend fails with a
one-line error naming that command.
"""
import functools
import os
import subprocess
import sys

import chainer
import cv2
import numpy as np
import onnx  # requirements-onnx.txt (`make onnx`, which `make test` runs)
import onnxruntime  # noqa: F401
import pytest

import cli
import export_onnx
import onnx_backend
from support.cmu_nets import random_net
from support.testing import REPO, coco_mini, one_line_error, run

TOL = 1e-4
MOBILENET_NPZ = os.path.join(REPO, 'models', 'mobilenet_v2_small.npz')


def _flat(out):
    return list(out[0]) + list(out[1]) if isinstance(out, tuple) else list(out)


def _chainer(model, x):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return _flat(model(x))


def _assert_close(ours, ref, what, scale=None):
    """max|diff| <= TOL x ``scale`` (default: max|ref|)."""
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    if scale is None:
        scale = np.abs(ref).max()
        assert scale > 1e-3 and ref.std() > 1e-3 * scale, (what, scale)  # not trivial
    err = np.abs(ours - ref).max()
    assert err <= TOL * scale, '%s: max|diff| %.3g > %.0e x %.3g' % (what, err, TOL, scale)


def _caffe_input(h, w, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(1, 3, h, w)).astype(np.float32) / 256 - 0.5


def _image_input(w, h):
    img = cv2.imread(coco_mini('000000000785.jpg'), cv2.IMREAD_COLOR)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)


@pytest.mark.parametrize('arch', ['posenet', 'facenet', 'handnet'])
def test_cmu_net_onnx_matches_chainer_at_two_sizes(arch):
    from models import get_model_class
    model = random_net(get_model_class(arch), seed=5)
    proto = export_onnx.to_onnx(model, arch)
    onnx.checker.check_model(proto)
    net = onnx_backend.OnnxNet(proto.SerializeToString(), arch)
    assert net.arch == arch
    for h, w in [(37, 53), (64, 48)]:  # odd: Caffe's ceil-mode pooling; one file, two sizes
        x = _caffe_input(h, w)
        ref = _chainer(model, x)
        ours = _flat(net(x))
        assert len(ours) == len(ref) == (12 if arch == 'posenet' else 6)
        assert all(isinstance(o, chainer.Variable) for o in ours)
        for i, (a, b) in enumerate(zip(ours, ref)):
            _assert_close(a.array, b.array, '%s %dx%d output %d' % (arch, h, w, i))


def test_mobilenet_onnx_matches_chainer_with_per_image_normalisation(tmp_path):
    """The shipped model through the command line: dynamic sizes (odd ones too: SAME
    padding and the legacy resize at any size), and a batch of two images gives each
    image's own result (the backbone normalises per image, not with frozen statistics)."""
    out = str(tmp_path / 'mobilenet.onnx')
    r = run('export_onnx.py', 'mobilenet', MOBILENET_NPZ, out, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'Wrote %s' % out in r.stdout
    proto = onnx.load(out)
    ops = {n.op_type for n in proto.graph.node}
    assert 'InstanceNormalization' in ops and 'Resize' in ops
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ['N', 3, 'H', 'W']
    model = export_onnx.load_model('mobilenet', MOBILENET_NPZ)
    net = onnx_backend.load_net('mobilenet', out, backend='onnx')
    for w, h in [(120, 88), (61, 45)]:
        x = _image_input(w, h)
        ref = _chainer(model, x)
        ours = _flat(net(x))
        # relative to the range of the net's maps (early stages' PAFs are near zero)
        scale = max(np.abs(b.array).max() for b in ref)
        assert scale > 0.5 and ref[-1].array.std() > 0.05  # real heatmaps of a real image
        for i, (a, b) in enumerate(zip(ours, ref)):
            _assert_close(a.array, b.array, 'mobilenet %dx%d output %d' % (w, h, i), scale)
    a, b = _image_input(96, 80), _image_input(96, 80)[:, :, ::-1, ::-1] * 0.5
    pair = net(np.concatenate([a, b]))
    alone = net(np.ascontiguousarray(b))
    np.testing.assert_allclose(pair[1][-1].array[1], alone[1][-1].array[0], atol=1e-5)


def test_load_net_exports_npz_in_memory_and_checks_arch(tmp_path):
    model = random_net(__import__('models.HandNet', fromlist=['HandNet']).HandNet, seed=2)
    npz = str(tmp_path / 'hand.npz')
    chainer.serializers.save_npz(npz, model)
    net = onnx_backend.load_net('handnet', npz, backend='onnx')
    x = _caffe_input(24, 32)
    _assert_close(net(x)[-1].array, _chainer(model, x)[-1].array, 'handnet from npz')
    onnx_path = str(tmp_path / 'hand.onnx')
    export_onnx.export('handnet', npz, onnx_path)
    with pytest.raises(cli.UserError, match=r'hand\.onnx: holds a handnet net, not facenet'):
        onnx_backend.load_net('facenet', onnx_path, backend='onnx')
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not a model')
    with pytest.raises(cli.UserError, match=r'bad\.onnx: not a loadable ONNX model'):
        onnx_backend.load_net('handnet', str(bad), backend='onnx')
    with pytest.raises(cli.UserError, match="unknown backend 'tf'"):
        onnx_backend.load_net('handnet', npz, backend='tf')


def test_export_cli_errors(tmp_path):
    export = functools.partial(run, 'export_onnx.py', timeout=60)
    out = str(tmp_path / 'x.onnx')
    one_line_error(export('posenet', tmp_path / 'missing.npz', out),
                   'missing.npz: no such weights file')
    one_line_error(export('posenet', MOBILENET_NPZ, out), 'not posenet weights')
    assert not os.path.exists(out)
    # OUT naming the weights file (here through a symlink) overwrote it with the ONNX model
    import shutil
    weights = tmp_path / 'w.npz'
    shutil.copy(MOBILENET_NPZ, str(weights))
    (tmp_path / 'w.onnx').symlink_to(weights)
    one_line_error(export('mobilenet', weights, tmp_path / 'w.onnx'),
                   'OUT %s is the same file as WEIGHTS %s' % (tmp_path / 'w.onnx', weights))
    assert weights.read_bytes() == open(MOBILENET_NPZ, 'rb').read()


def test_missing_onnxruntime_names_the_install_command(tmp_path):
    """A Python where onnxruntime cannot be imported: one line naming `make onnx`."""
    code = ('import sys; sys.modules["onnxruntime"] = None; sys.path.insert(0, %r)\n'
            'import cli, onnx_backend\n'
            'cli.run_main(lambda argv: onnx_backend.load_net("handnet", "x.npz", backend="onnx"))'
            % REPO)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    one_line_error(r, 'make onnx')


def _cli_json(script, args, tmp_path, name):
    out_json = tmp_path / (name + '.json')
    r = run(script, *args, '--out', tmp_path / (name + '.png'), '--json', out_json,
            timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    with open(out_json) as f:
        return json.load(f)


def test_pose_detector_backend_onnx_finds_the_same_people(tmp_path):
    """``pose_detector.py --backend onnx`` (embedded model, exported in memory) gives the
    Chainer backend's keypoints; an exported file works as WEIGHTS too."""
    img = coco_mini('000000196141.jpg')  # 5 people
    base = ['--img', img, '--scales', '1']
    ref = _cli_json('pose_detector.py', base, tmp_path, 'chainer')
    onnx_file = tmp_path / 'mobilenet.onnx'
    export_onnx.export('mobilenet', MOBILENET_NPZ, str(onnx_file))
    ours = _cli_json('pose_detector.py', ['mobilenet', onnx_file] + base + ['--backend', 'onnx'],
                     tmp_path, 'onnx')
    assert len(ref['people']) >= 2 and len(ours['people']) == len(ref['people'])
    a = np.array([p['pose_keypoints_2d'] for p in ours['people']]).reshape(-1, 3)
    b = np.array([p['pose_keypoints_2d'] for p in ref['people']]).reshape(-1, 3)
    assert np.array_equal(a[:, 2] > 0, b[:, 2] > 0)
    assert np.abs(a[:, :2] - b[:, :2]).max() <= 0.05  # pixels
    assert np.abs(a[:, 2] - b[:, 2]).max() <= 1e-3


def test_backend_flag_on_every_detector_and_demo():
    """Every detector and demo takes --backend chainer|onnx; onnx with --gpu is refused."""
    for script in ['pose_detector.py', 'face_detector.py', 'hand_detector.py', 'demo.py',
                   'camera_pose_demo.py', 'camera_face_demo.py', 'evaluate_coco.py']:
        r = run(script, '--help', timeout=60)
        assert r.returncode == 0 and '--backend {chainer,onnx}' in r.stdout, script
    import pose_detector
    with pytest.raises(cli.UserError, match='onnx backend runs on the CPU'):
        pose_detector.PoseDetector(device=0, backend='onnx')
