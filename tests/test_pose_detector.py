"""pose_detector.py: the original's command, the embedded model, JSON output, bad inputs."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import cli
import pose_detector
from conftest import REPO, shared_path
from entity import params

SCRIPT = os.path.join(REPO, 'pose_detector.py')
DEMO_IMAGE = os.path.join(REPO, 'data', '000000000785.jpg')
N_JOINTS = 18


def run(args, cwd):
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args], cwd=str(cwd),
                          capture_output=True, text=True)


def assert_one_line_error(p, *words):
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith('error: ') and p.stderr.count('\n') == 1, p.stderr
    assert 'Traceback' not in p.stderr
    for w in words:
        assert str(w) in p.stderr, p.stderr


def ground_truth_785():
    """(17, 3) COCO keypoints of the skier in image 785 (x, y, visibility)."""
    with open(shared_path('coco_mini', 'test_coco.json')) as f:
        anns = [a for a in json.load(f)['annotations'] if a['image_id'] == 785]
    assert len(anns) == 1
    return np.array(anns[0]['keypoints'], np.float64).reshape(17, 3)


def keypoint_errors(pose18, gt17, scale=1.0):
    """Distances from detected to labelled keypoints (in the 640x425 image's pixels)."""
    ours = np.asarray(pose18)[params['coco_joint_indices']]
    both = (ours[:, 2] > 0) & (gt17[:, 2] > 0)
    return np.hypot(*(ours[both, :2] / scale - gt17[both, :2]).T)


@pytest.fixture(scope='module')
def random_posenet(tmp_path_factory):
    """A random-weight CocoPoseNet saved as models/coco_posenet.npz, beside data/person.png
    (the original repo's person.png shrunk to 64x64), as the original's README expects."""
    import chainer
    from models.CocoPoseNet import CocoPoseNet
    root = tmp_path_factory.mktemp('orig')
    (root / 'models').mkdir()
    (root / 'data').mkdir()
    chainer.serializers.save_npz(str(root / 'models' / 'coco_posenet.npz'), CocoPoseNet(),
                                 compression=False)
    person = cv2.imread(shared_path('images', 'person.png'), cv2.IMREAD_COLOR)
    # square: the net's inputs (shorter side 368 x scale) are then as small as they get
    cv2.imwrite(str(root / 'data' / 'person.png'), cv2.resize(person, (64, 64)))
    return root


def test_original_command_verbatim(random_posenet):
    # python pose_detector.py posenet models/coco_posenet.npz --img data/person.png
    p = run(['posenet', 'models/coco_posenet.npz', '--img', 'data/person.png'], random_posenet)
    assert p.returncode == 0, p.stderr
    assert 'result.png' in p.stdout
    out = cv2.imread(str(random_posenet / 'result.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (64, 64, 3)
    # random weights give near-zero maps: nobody found, the picture is the input unchanged
    assert 'Found 0 people' in p.stdout
    assert np.array_equal(out, cv2.imread(str(random_posenet / 'data' / 'person.png')))


def test_original_command_with_gpu_needs_cupy(random_posenet, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'cupy', None)  # as on a machine without CuPy
    monkeypatch.chdir(random_posenet)
    with pytest.raises(cli.UserError, match='CuPy'):
        pose_detector.main(['posenet', 'models/coco_posenet.npz', '--img', 'data/person.png',
                            '--gpu', '0', '--out', 'gpu.png'])
    assert not (random_posenet / 'gpu.png').exists()


@pytest.mark.parametrize('arch, weights, words', [
    ('mobilenet', 'POSENET', ['not mobilenet weights', "357 of the network's 357 arrays missing"]),
    ('posenet', os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'),
     ['not posenet weights', "184 of the network's 184 arrays missing", 'Mconv1_stage2_L1/W']),
])
def test_weights_of_the_wrong_arch(random_posenet, tmp_path, arch, weights, words):
    if weights == 'POSENET':
        weights = random_posenet / 'models' / 'coco_posenet.npz'
    p = run([arch, weights, '--img', DEMO_IMAGE, '--out', tmp_path / 'o.png',
             '--json', tmp_path / 'o.json'], tmp_path)
    assert_one_line_error(p, weights, *words)
    assert os.listdir(tmp_path) == []


def test_weights_with_a_wrong_shape_or_not_npz(tmp_path):
    src = np.load(os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'))
    arrays = {k: src[k] for k in src.files}
    arrays['Conv/W'] = np.zeros((7, 3, 3, 3), np.float32)
    np.savez(str(tmp_path / 'bad_shape.npz'), **arrays)
    with pytest.raises(cli.UserError, match=r'bad_shape.npz: not mobilenet weights: Conv/W has '
                                            r'shape \(7, 3, 3, 3\)'):
        pose_detector.load_model('mobilenet', str(tmp_path / 'bad_shape.npz'))
    (tmp_path / 'text.npz').write_text('not weights\n')
    with pytest.raises(cli.UserError, match='text.npz: not a Chainer .npz'):
        pose_detector.load_model('mobilenet', str(tmp_path / 'text.npz'))
    with pytest.raises(cli.UserError, match='nope.npz: no such weights file'):
        pose_detector.load_model('mobilenet', str(tmp_path / 'nope.npz'))
    with pytest.raises(cli.UserError, match='python convert_model.py posenet '
                                            'pose_iter_440000.caffemodel .*nope.npz'):
        pose_detector.load_model('posenet', str(tmp_path / 'nope.npz'))


def test_embedded_model_json_and_picture(tmp_path):
    # no arch, no weights: the embedded MobileNet; one scale keeps the test quick
    p = run(['--img', DEMO_IMAGE, '--out', tmp_path / 'out.png', '--json', tmp_path / 'p.json',
             '--scales', '1'], tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'Found 1 person' in p.stdout and str(tmp_path / 'out.png') in p.stdout
    assert sorted(os.listdir(tmp_path)) == ['out.png', 'p.json']
    out = cv2.imread(str(tmp_path / 'out.png'))
    src = cv2.imread(DEMO_IMAGE)
    assert out.shape == src.shape and not np.array_equal(out, src)

    with open(tmp_path / 'p.json') as f:
        doc = json.load(f)
    assert doc['version'] == 1.3 and isinstance(doc['people'], list) and len(doc['people']) == 1
    for person in doc['people']:
        kp = person['pose_keypoints_2d']
        assert len(kp) == 3 * N_JOINTS and all(isinstance(v, (int, float)) for v in kp)
        kp = np.array(kp).reshape(N_JOINTS, 3)
        assert np.all((kp[:, 2] >= 0) & (kp[:, 2] <= 1.5))
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)  # missing joints are 0, 0, 0
        assert np.all((kp[:, 0] < src.shape[1]) & (kp[:, 1] < src.shape[0]))
    err = keypoint_errors(kp, ground_truth_785())
    assert len(err) >= 13 and np.median(err) < 8, err  # person ~350 px tall


def test_python_api_shapes():
    detector = pose_detector.PoseDetector(scales=[1])
    img = cv2.imread(DEMO_IMAGE)
    poses, scores = detector(img)
    assert poses.shape == (1, N_JOINTS, 3) and scores.shape == (1,)
    assert scores[0] > 0 and np.median(keypoint_errors(poses[0], ground_truth_785())) < 8
    # grey input through the API is accepted too
    poses_g, _ = detector(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert poses_g.shape[1:] == (N_JOINTS, 3)


@pytest.mark.parametrize('kind, words', [
    ('missing', ['no such file']), ('text', ['not an image']), ('empty', ['empty file'])])
def test_bad_images_one_line_error_no_output(tmp_path, kind, words):
    img = tmp_path / ('in_' + kind + '.png')
    if kind == 'text':
        img.write_text('this is not a PNG\n')
    elif kind == 'empty':
        img.write_bytes(b'')
    out = tmp_path / 'out'
    out.mkdir()
    p = run(['--img', img, '--out', out / 'r.png', '--json', out / 'r.json'], tmp_path)
    assert_one_line_error(p, img, *words)
    assert os.listdir(out) == []


def test_unwritable_output_is_one_line_error(tmp_path):
    p = run(['--img', DEMO_IMAGE, '--out', tmp_path / 'r.xyz', '--scales', '0.5'], tmp_path)
    assert_one_line_error(p, 'r.xyz')
    p = run(['--img', DEMO_IMAGE, '--out', tmp_path / 'no' / 'r.png', '--scales', '0.5'],
            tmp_path)
    assert_one_line_error(p, 'does not exist')
    assert os.listdir(tmp_path) == []


def _grey(src):
    return cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)


def _rgba(src):
    return np.dstack([src, np.full(src.shape[:2], 255, np.uint8)])


def _deep(src):
    return src.astype(np.uint16) * 257


@pytest.mark.parametrize('name, make, n_people', [
    ('grey.png', _grey, 1), ('rgba.png', _rgba, 1), ('deep16.png', _deep, 1),
    ('one.png', lambda src: src[200:201, 400:401], 0),
    ('nobody.png', lambda src: np.full((90, 120, 3), 200, np.uint8), 0),
])
def test_unusual_images_work(tmp_path, capsys, name, make, n_people):
    src = cv2.imread(DEMO_IMAGE)
    arr = make(src)
    cv2.imwrite(str(tmp_path / name), arr)
    assert cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED).dtype == arr.dtype
    assert pose_detector.main(['--img', str(tmp_path / name), '--out', str(tmp_path / 'o.png'),
                               '--json', str(tmp_path / 'o.json'), '--scales', '1']) == 0
    assert 'Found %d %s' % (n_people, 'person' if n_people == 1 else 'people') \
        in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / 'o.png')).shape == arr.shape[:2] + (3,)
    with open(tmp_path / 'o.json') as f:
        assert len(json.load(f)['people']) == n_people


def test_huge_image_memory_bounded(tmp_path):
    # 10000 x 10000: maps at full resolution would need 57 * 4e8 bytes = 23 GB; the working
    # resolution is capped at the largest net input (736), so the process stays near 1 GB.
    f = 10000 / 640
    big = np.zeros((10000, 10000, 3), np.uint8)
    big[:round(425 * f)] = cv2.resize(cv2.imread(DEMO_IMAGE), (10000, round(425 * f)),
                                      interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / 'huge.jpg'), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del big
    proc = subprocess.Popen([sys.executable, SCRIPT, '--img', str(tmp_path / 'huge.jpg'),
                             '--out', str(tmp_path / 'huge_out.jpg'),
                             '--json', str(tmp_path / 'huge.json')],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.communicate()
    assert os.waitstatus_to_exitcode(status) == 0, stderr
    peak_mb = usage.ru_maxrss / 1024
    print('10000x10000 image: peak RSS %.0f MB' % peak_mb)
    assert peak_mb < 2500
    assert b'Found 1 person' in stdout
    with open(tmp_path / 'huge.json') as fj:
        people = json.load(fj)['people']
    kp = np.array(people[0]['pose_keypoints_2d']).reshape(N_JOINTS, 3)
    err = keypoint_errors(kp, ground_truth_785(), scale=f)
    assert len(err) >= 13 and np.median(err) < 8, err
    out = cv2.imread(str(tmp_path / 'huge_out.jpg'), cv2.IMREAD_REDUCED_COLOR_8)
    assert out.shape == (1250, 1250, 3)


def test_flip_option_end_to_end(tmp_path):
    # --flip: the mirrored image too (twice the forwards); still the skier, on the labels
    p = run(['--img', DEMO_IMAGE, '--out', tmp_path / 'out.png', '--json', tmp_path / 'p.json',
             '--scales', '1', '--flip'], tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'Found 1 person' in p.stdout
    with open(tmp_path / 'p.json') as f:
        kp = np.array(json.load(f)['people'][0]['pose_keypoints_2d']).reshape(N_JOINTS, 3)
    err = keypoint_errors(kp, ground_truth_785())
    assert len(err) >= 13 and np.median(err) < 8, err


class _Built(Exception):
    pass


@pytest.mark.parametrize('script, argv', [
    ('pose_detector', ['--img', DEMO_IMAGE]),
    ('demo', ['--img', DEMO_IMAGE]),
    ('evaluate_coco', ['--ann', 'a.json', '--img-dir', '.']),
    ('camera_pose_demo', ['--images', '.', '--no-display'])])
def test_flip_flag_of_every_script_reaches_the_detector(monkeypatch, script, argv):
    """--flip / --no-flip / nothing (the default flip_test) arrive as PoseDetector's flip."""
    import importlib
    import evaluate_coco
    module = importlib.import_module(script)
    got = []

    def fake_detector(*args, **kw):
        got.append(kw.get('flip'))
        raise _Built()
    monkeypatch.setattr(pose_detector, 'PoseDetector', fake_detector)
    monkeypatch.setattr(module, 'PoseDetector', fake_detector, raising=False)
    monkeypatch.setattr(evaluate_coco, 'load_coco', lambda ann: None)
    for flag, want in (('--flip', True), ('--no-flip', False), (None, None)):
        with pytest.raises(_Built):
            module.main(argv + ([flag] if flag else []))
        assert got[-1] is want


def test_flip_defaults_to_flip_test(monkeypatch):
    for value in (False, True):
        monkeypatch.setitem(params, 'flip_test', value)
        assert pose_detector.PoseDetector(model=object()).flip is value
        assert pose_detector.PoseDetector(model=object(), flip=not value).flip is (not value)
