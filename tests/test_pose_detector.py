"""pose_detector.py: the original's command, the embedded model, JSON output, bad inputs."""
import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import cli
import image_io
import pose_detector
from entity import params
from support import testing
from support.testing import REPO, coco_mini, one_line_error

run = functools.partial(testing.run, 'pose_detector.py')  # this module's script
DEMO_IMAGE = os.path.join(REPO, 'data', '000000000785.jpg')
N_JOINTS = 18


def ground_truth_785():
    """(17, 3) COCO keypoints of the skier in image 785 (x, y, visibility)."""
    with open(coco_mini('test_coco.json')) as f:
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
    (a photo shrunk to 64x64), as the original's README expects."""
    import chainer
    from models.CocoPoseNet import CocoPoseNet
    root = tmp_path_factory.mktemp('orig')
    (root / 'models').mkdir()
    (root / 'data').mkdir()
    chainer.serializers.save_npz(str(root / 'models' / 'coco_posenet.npz'), CocoPoseNet(),
                                 compression=False)
    person = cv2.imread(DEMO_IMAGE, cv2.IMREAD_COLOR)
    # square: the net's inputs (shorter side 368 x scale) are then as small as they get
    cv2.imwrite(str(root / 'data' / 'person.png'), cv2.resize(person, (64, 64)))
    return root


def test_original_command_verbatim(random_posenet):
    # python pose_detector.py posenet models/coco_posenet.npz --img data/person.png
    p = run('posenet', 'models/coco_posenet.npz', '--img', 'data/person.png',
            cwd=random_posenet)
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
    p = run(arch, weights, '--img', DEMO_IMAGE, '--out', tmp_path / 'o.png',
            '--json', tmp_path / 'o.json', cwd=tmp_path)
    one_line_error(p, weights, *words)
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
    p = run('--img', DEMO_IMAGE, '--out', tmp_path / 'out.png', '--json', tmp_path / 'p.json',
            '--scales', '1', cwd=tmp_path)
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
    p = run('--img', img, '--out', out / 'r.png', '--json', out / 'r.json', cwd=tmp_path)
    one_line_error(p, img, *words)
    assert os.listdir(out) == []


def test_unwritable_output_is_one_line_error(tmp_path):
    p = run('--img', DEMO_IMAGE, '--out', tmp_path / 'r.xyz', '--scales', '0.5', cwd=tmp_path)
    one_line_error(p, 'r.xyz')
    p = run('--img', DEMO_IMAGE, '--out', tmp_path / 'no' / 'r.png', '--scales', '0.5',
            cwd=tmp_path)
    one_line_error(p, 'does not exist')
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
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'pose_detector.py'),
                             '--img', str(tmp_path / 'huge.jpg'),
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


def test_exif_rotated_phone_photo_is_read_upright(tmp_path):
    """A phone photo stored sideways with EXIF Orientation 6 is processed as a viewer shows
    it: the skier is found and the keypoints are in the upright picture's frame (ground
    truth of COCO 785), the output picture is upright too."""
    from support.testing import jpeg_with_orientation
    upright = cv2.imread(DEMO_IMAGE)
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # what the phone keeps
    ok, buf = cv2.imencode('.jpg', stored, [cv2.IMWRITE_JPEG_QUALITY, 95])
    photo = tmp_path / 'phone.jpg'
    photo.write_bytes(jpeg_with_orientation(buf.tobytes(), 6))
    img = image_io.read_image(str(photo))
    assert img.shape == upright.shape
    assert np.abs(img.astype(int) - upright).mean() < 3  # JPEG noise only
    assert image_io.read_image(str(photo), exif=False).shape == stored.shape
    p = run('--img', photo, '--out', tmp_path / 'out.png', '--json', tmp_path / 'p.json',
            '--scales', '1', cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'Found 1 person' in p.stdout
    assert cv2.imread(str(tmp_path / 'out.png')).shape == upright.shape
    with open(tmp_path / 'p.json') as f:
        (person,) = json.load(f)['people']
    err = keypoint_errors(np.array(person['pose_keypoints_2d']).reshape(N_JOINTS, 3),
                          ground_truth_785())
    assert len(err) >= 13 and np.median(err) < 8, err


def test_truncated_jpeg_warns_and_bad_png_is_one_line(tmp_path):
    """A JPEG cut to a third decodes (OpenCV fills the rest grey) with one warning line; a cut
    PNG is one error line, libpng's own message folded into it."""
    data = open(DEMO_IMAGE, 'rb').read()
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(data[:len(data) // 3])
    p = run('--img', cut, '--out', tmp_path / 'o.png', '--scales', '0.5', cwd=tmp_path)
    if cv2.imdecode(np.frombuffer(cut.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is None:
        # OpenCV 4.11+ refuse a truncated JPEG: one line saying so
        one_line_error(p, 'cut.jpg: truncated JPEG (the file ends inside the image '
                          'data) that this OpenCV does not decode')
    else:
        assert p.returncode == 0, p.stderr
        assert p.stderr == ('warning: %s: truncated JPEG (the file ends inside the image '
                            'data): the missing part is grey\n' % cut)
    png = cv2.imencode('.png', cv2.imread(DEMO_IMAGE))[1].tobytes()
    cut_png = tmp_path / 'cut.png'
    cut_png.write_bytes(png[:len(png) // 3])
    p = run('--img', cut_png, '--out', tmp_path / 'o2.png', cwd=tmp_path)
    one_line_error(p, 'cut.png: not an image OpenCV can decode', 'libpng error')


def test_no_false_truncation_warnings():
    """Complete JPEGs in every layout are not flagged: baseline, progressive, with restart
    markers, with an EXIF block, with data appended after the end marker (motion photos)."""
    import image_io
    from support.testing import jpeg_with_orientation
    img = cv2.imread(DEMO_IMAGE)
    variants = [cv2.imencode('.jpg', img)[1].tobytes(),
                cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
                cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_RST_INTERVAL, 3])[1].tobytes()]
    variants += [jpeg_with_orientation(variants[0], 6), variants[1] + b'\0ftypmp42' * 100,
                 open(DEMO_IMAGE, 'rb').read()]
    for data in variants:
        assert not image_io.jpeg_truncated(data)
        for cut in (len(data) // 3, len(data) // 2):
            assert image_io.jpeg_truncated(data[:cut])


def test_outputs_never_destroy_inputs_devices_or_links(tmp_path):
    """--out onto the input picture, --json onto it, --out and --json naming one file, an
    output that is a device node: refused before any work, nothing changed.  --json through
    a symlink writes the link's target and keeps the link."""
    import stat
    from support.testing import full_device
    img = tmp_path / 'a.png'
    img.write_bytes(cv2.imencode('.png', cv2.imread(DEMO_IMAGE))[1].tobytes())
    before = img.read_bytes()
    p = run('--img', img, '--out', img, cwd=tmp_path)
    one_line_error(p, '--out %s is the same file as --img %s' % (img, img))
    p = run('--img', img, '--json', img, cwd=tmp_path)
    one_line_error(p, '--json %s is the same file as --img' % img)
    p = run('--img', img, '--out', tmp_path / 'b.png', '--json', tmp_path / 'b.png',
            cwd=tmp_path)
    one_line_error(p, 'b.png and --json', 'are the same file')
    dev = tmp_path / 'full'
    full_device(dev)
    p = run('--img', img, '--json', dev, cwd=tmp_path)
    one_line_error(p, '--json %s: is a character device, not a regular file' % dev)
    assert img.read_bytes() == before and stat.S_ISCHR(os.stat(dev).st_mode)
    assert sorted(os.listdir(tmp_path)) == ['a.png', 'full']
    target = tmp_path / 'poses.json'
    target.write_text('old')
    (tmp_path / 'link.json').symlink_to(target)
    p = run('--img', img, '--out', tmp_path / 'o.png', '--json', tmp_path / 'link.json',
            '--scales', '0.5', cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / 'link.json').is_symlink()
    assert json.loads(target.read_text())['version'] == 1.3


@pytest.mark.parametrize('args, words', [
    (['--scales', '50'], 'scales must be positive numbers up to 3'),
    (['--scales', 'nan'], 'got nan'),
    (['--scales', 'inf'], 'got inf'),
    (['--scales', '1e9'], 'got 1e+09'),
    (['--scales', '0.5', '-1'], 'got 0.5 -1'),
    (['--scales'] + ['1'] * 9, 'at most 8 scales'),
])
def test_size_limits_refused_before_any_work(tmp_path, args, words):
    """--scales 50 grew to all the machine's memory; nan / inf / 1e9 failed deep in OpenCV.
    Now one line, before the image is read or the model loaded (under a 3 GB address-space
    limit in case they were not)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))
    p = run('--img', DEMO_IMAGE, '--out', tmp_path / 'o.png', *args, cwd=tmp_path,
            preexec_fn=limit, timeout=120)
    one_line_error(p, words)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('script, args', [
    ('pose_detector.py', ['posenet', 'PTH', '--img', DEMO_IMAGE]),
    ('face_detector.py', ['facenet', 'PTH', '--img', DEMO_IMAGE]),
    ('demo.py', ['--img', DEMO_IMAGE, '--pose-arch', 'posenet', '--pose-weights', 'PTH']),
    ('export_onnx.py', ['handnet', 'PTH', 'OUT']),
])
@pytest.mark.parametrize('pth', ['hand_subset.pth', 'hand_subset_legacy.pth'])
def test_unconverted_pytorch_weights_say_how_to_convert(tmp_path, script, args, pth):
    """A pytorch-openpose .pth given as weights (a zip without .npy members, or the legacy
    pickle format) was a traceback; now one line naming convert_model.py."""
    from support.testing import FIXTURES
    path = os.path.join(FIXTURES, pth)
    args = [path if a == 'PTH' else tmp_path / 'x.onnx' if a == 'OUT' else a for a in args]
    if script != 'export_onnx.py':
        args += ['--out', tmp_path / 'o.png']
    p = testing.run(script, *args, cwd=tmp_path)
    one_line_error(p, path, 'it is a PyTorch .pth file: convert it first with '
                            'python convert_model.py')
    assert os.listdir(tmp_path) == []


def _mobilenet_arrays():
    src = np.load(os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'))
    return {k: src[k] for k in src.files}


def test_nan_weights_refused_naming_the_array(tmp_path):
    """A damaged npz (NaN / Inf in one array) loaded silently and found nobody."""
    for value, name in ((np.nan, 'nan.npz'), (np.inf, 'inf.npz')):
        arrays = _mobilenet_arrays()
        arrays['MConv_Stage6_L2_5_pointwise/W'].flat[[3, 7]] = value
        np.savez(str(tmp_path / name), **arrays)
        with pytest.raises(cli.UserError, match=r'%s: array MConv_Stage6_L2_5_pointwise/W holds '
                                                r'2 NaN or infinite values' % name):
            pose_detector.load_model('mobilenet', str(tmp_path / name))
    p = run('mobilenet', tmp_path / 'nan.npz', '--img', DEMO_IMAGE, '--out',
            tmp_path / 'o.png', cwd=tmp_path)
    one_line_error(p, 'nan.npz: array MConv_Stage6_L2_5_pointwise/W holds 2 NaN')


def test_npz_of_other_dtypes_or_forged_sizes(tmp_path):
    """Complex or string arrays were a traceback inside Chainer; a header declaring more data
    than the member holds is refused from the header, before any data is read."""
    arrays = _mobilenet_arrays()
    arrays['Conv/W'] = arrays['Conv/W'].astype(np.complex64)
    np.savez(str(tmp_path / 'complex.npz'), **arrays)
    arrays = _mobilenet_arrays()
    arrays['Conv/W'] = np.full(arrays['Conv/W'].shape, 'x')
    np.savez(str(tmp_path / 'str.npz'), **arrays)
    for name, words in (('complex.npz', 'array Conv/W has dtype complex64; weights are real'),
                        ('str.npz', 'array Conv/W has dtype <U1; weights are real')):
        p = run('mobilenet', tmp_path / name, '--img', DEMO_IMAGE, '--out',
                tmp_path / 'o.png', cwd=tmp_path)
        one_line_error(p, name, words)
    # Conv/W declared as 40000 x 40000 x 3 x 3 (57 GB) in a few bytes of a deflated member
    import zipfile
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header['shape'] = (40000, 40000, 3, 3)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    forged = tmp_path / 'forged.npz'
    with zipfile.ZipFile(forged, 'w', zipfile.ZIP_DEFLATED) as z:
        z.writestr('Conv/W.npy', buf.getvalue() + bytes(4096))
    with pytest.raises(cli.UserError, match=r'forged.npz: array Conv/W declares shape '
                                            r'\(40000, 40000, 3, 3\) \(57600000000 bytes\) but '
                                            r'holds 4096 bytes'):
        pose_detector.load_model('mobilenet', str(forged))


def test_flip_option_end_to_end(tmp_path):
    # --flip: the mirrored image too (twice the forwards); still the skier, on the labels
    p = run('--img', DEMO_IMAGE, '--out', tmp_path / 'out.png', '--json', tmp_path / 'p.json',
            '--scales', '1', '--flip', cwd=tmp_path)
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
    # an annotation file with one image: evaluate_coco refuses one with none before the detector
    one_image = type('Coco', (), {'getImgIds': lambda self: [1]})()
    monkeypatch.setattr(evaluate_coco, 'load_coco', lambda ann: one_image)
    for flag, want in (('--flip', True), ('--no-flip', False), (None, None)):
        with pytest.raises(_Built):
            module.main(argv + ([flag] if flag else []))
        assert got[-1] is want


def test_flip_defaults_to_flip_test(monkeypatch):
    for value in (False, True):
        monkeypatch.setitem(params, 'flip_test', value)
        assert pose_detector.PoseDetector(model=object()).flip is value
        assert pose_detector.PoseDetector(model=object(), flip=not value).flip is (not value)
