"""face_detector.py: crop/peak geometry with stand-in nets, drawing, the CLI end to end."""
import functools
import json
import os
import sys

import chainer
import cv2
import numpy as np
import pytest

import cli
from entity import params
from drawing import draw_face_keypoints
from face_detector import FaceDetector, face_box_from_pose
from hand_detector import HandDetector
from support import testing
from support.keypoint_nets import MAP, TOL, PeakNet, cells, expected
from support.testing import REPO, coco_mini, one_line_error, shared_path

run = functools.partial(testing.run, 'face_detector.py')  # this module's script
N = params['face_n_keypoints']
INSIZE = params['face_inference_img_size']


class BrightSpotNet(PeakNet):
    """Stand-in that looks at its input: all maps peak at the 8x8 input cell holding the
    brightest pixels (so crop, padding, resizing and mirroring are all exercised)."""

    def __init__(self, n_maps):
        super().__init__(np.zeros((0, 2), int), n_maps)

    def __call__(self, x):
        grey = np.asarray(x)[0].mean(0)
        s = grey.shape[0] // 8
        cells = grey.reshape(s, 8, s, 8).mean((1, 3))
        cy, cx = np.unravel_index(np.argmax(cells), cells.shape)
        self.cells = np.tile([[cx, cy]], (self.n_maps - 1, 1))
        return super().__call__(x)


IMG = np.full((300, 400, 3), 90, np.uint8)


@pytest.mark.parametrize('box', [
    (131, 77, 138, 138),     # middle, 3 crop px per map cell
    (-60, 100, 138, 138),    # past the left border
    (200, -50, 138, 138),    # past the top
    (330, 120, 138, 138),    # past the right
    (100, 240, 138, 138),    # past the bottom
    (-40, -30, 138, 138),    # top-left corner
    (350, 250, 138, 138),    # bottom-right corner
    (0, 0, 400, 300),        # the whole image (the CLI's default box): 400 px square crop
    (150, 100, 46, 46),      # one crop px per map cell
    (20.4, 30.4, 230, 230),  # sub-pixel box corner: the nearest pixel window
])
def test_single_peaks_land_on_the_expected_image_pixels(box):
    c = cells(N)
    net = PeakNet(c, N + 1)
    kp = FaceDetector(model=net)(IMG, box)
    assert kp.shape == (N, 3)
    x0, y0 = int(np.floor(box[0] + 0.5)), int(np.floor(box[1] + 0.5))
    side = max(int(round(box[2])), int(round(box[3])))
    np.testing.assert_allclose(kp[:, :2], expected(c, x0, y0, side), atol=TOL)
    assert (kp[:, 2] > 0.5).all()
    (x,) = net.inputs
    assert x.shape == (1, 3, INSIZE, INSIZE) and x.dtype == np.float32


@pytest.mark.parametrize('side', [1, 7, 23])
def test_crops_smaller_than_the_maps_keep_their_peaks(side):
    # peaks found on the net's own 46x46 grid, scaled down to the crop
    c = cells(N, seed=5)
    kp = FaceDetector(model=PeakNet(c, N + 1))(IMG, (200, 100, side, side))
    assert (kp[:, 2] > 0.5).all()
    np.testing.assert_allclose(kp[:, :2], expected(c, 200, 100, side), atol=TOL)


def test_non_square_box_is_padded_bottom_right_not_stretched():
    c = cells(N, seed=1)
    kp = FaceDetector(model=PeakNet(c, N + 1))(IMG, (50, 60, 100, 138))
    np.testing.assert_allclose(kp[:, :2], expected(c, 50, 60, 138), atol=TOL)


def test_crop_larger_than_the_net_input():
    # 736 px crop: peaks are found at net resolution (368) and scaled by 2
    img = np.zeros((800, 900, 3), np.uint8)
    c = cells(N, seed=2)
    kp = FaceDetector(model=PeakNet(c, N + 1))(img, (100, 30, 736, 736))
    np.testing.assert_allclose(kp[:, :2], expected(c, 100, 30, 736), atol=TOL)


def test_maps_below_the_threshold_give_zero_keypoints():
    c = cells(N, seed=3)
    values = np.where(np.arange(N) % 2 == 0, 1.0, 0.5 * params['face_heatmap_peak_thresh'])
    kp = FaceDetector(model=PeakNet(c, N + 1, values))(IMG, (131, 77, 138, 138))
    assert (kp[1::2] == 0).all()
    np.testing.assert_allclose(kp[0::2, :2], expected(c, 131, 77, 138)[0::2], atol=TOL)


@pytest.mark.parametrize('box', [(10, 10, 0, 50), (10, 10, 50, 0), (10, 10, 0.3, 0.3),
                                 (500, 10, 50, 50), (-100, 10, 50, 50), (10, 400, 50, 50),
                                 (np.nan, 0, 50, 50)])
def test_empty_or_outside_boxes_give_an_empty_result_without_running_the_net(box):
    net = PeakNet(cells(N), N + 1)
    kp = FaceDetector(model=net)(IMG, box)
    assert kp.shape == (N, 3) and (kp == 0).all() and net.inputs == []


def test_box_far_larger_than_the_image_is_a_user_error():
    with pytest.raises(cli.UserError, match='more than 4 times'):
        FaceDetector(model=PeakNet(cells(N), N + 1))(IMG, (0, 0, 5000, 5000))


@pytest.mark.parametrize('box, hand_type', [
    ((131, 77, 138, 138), 'left'), ((131, 77, 138, 138), 'right'),
    ((-60, 100, 138, 138), 'left'), ((330, 120, 138, 138), 'left'),
    ((200, -50, 138, 138), 'right'), ((350, 250, 138, 138), 'left')])
def test_input_registration_bright_spot(box, hand_type):
    """A white block in the image that fills exactly one 8x8 net-input cell must come back
    at its own centre, for crops at the borders and for the mirrored (left) hand."""
    x0, y0 = box[:2]  # the boxes are 138 px: 3 image px per map cell
    rng = np.random.RandomState(int(x0 + 1000 + y0))
    # a cell whose block lies inside the image
    while True:
        c = rng.randint(1, MAP - 1, 2)
        bx, by = x0 + 3 * c[0], y0 + 3 * c[1]
        if 0 <= bx and bx + 3 <= IMG.shape[1] and 0 <= by and by + 3 <= IMG.shape[0]:
            break
    img = np.zeros_like(IMG)
    img[by:by + 3, bx:bx + 3] = 255
    net = BrightSpotNet(params['hand_n_keypoints'] + 1)
    kp = HandDetector(model=net)(img, box, hand_type)
    want = np.array([bx + 1, by + 1], float)  # the block's centre pixel
    np.testing.assert_allclose(kp[:, :2], np.tile(want, (len(kp), 1)), atol=TOL)
    # the net saw the mirror image for the left hand (the model was trained on right hands)
    seen = net.cells[0]
    assert seen[0] == (MAP - 1 - c[0] if hand_type == 'left' else c[0]) and seen[1] == c[1]


def test_face_box_from_pose_follows_openpose():
    pose = np.zeros((18, 3))
    pose[0] = (100, 100, 0.9)   # nose
    pose[1] = (100, 160, 0.9)   # neck
    # nose + neck only: centre between them, size 2 * 60 (OpenPose) = face size * 1.5
    x, y, w, h = face_box_from_pose(pose)
    assert (x + w / 2, y + h / 2) == (100, 130) and w == h == pytest.approx(120)
    pose[15] = (90, 92, 0.9)    # left eye
    pose[14] = (110, 92, 0.9)   # right eye -> centre (100, 92), size 3 * 20
    x, y, w, h = face_box_from_pose(pose)
    assert (x + w / 2, y + h / 2) == pytest.approx((100, 111)) and w == pytest.approx(90)
    pose[:, 2] = 0.05           # below box_joint_thresh
    assert face_box_from_pose(pose) is None


def test_drawing_marks_found_points_only():
    img = np.zeros((100, 120, 3), np.uint8)
    kp = np.zeros((N, 3))
    kp[36:42] = [(30, 40, 1), (35, 38, 1), (40, 38, 1), (45, 40, 1), (40, 42, 1), (35, 42, 1)]
    out = draw_face_keypoints(img, kp)
    assert out.shape == img.shape and (img == 0).all()  # a copy
    assert out[40, 30].any() and out[39, 43].any()  # points and the eye contour
    assert not out[80:, :].any() and not out[:, 80:].any()  # nothing for the missing points


# ----------------------------------------------------------------------------- CLI

def test_original_command_verbatim(face_npz, tmp_path):
    """python face_detector.py facenet models/facenet.npz --img data/face.png -> result.png"""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'data').mkdir()
    os.symlink(str(face_npz), str(tmp_path / 'models' / 'facenet.npz'))
    os.symlink(shared_path('images', 'face.png'), str(tmp_path / 'data' / 'face.png'))
    r = run('facenet', 'models/facenet.npz', '--img', 'data/face.png', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'Saving result into result.png' in r.stdout
    out = cv2.imread(str(tmp_path / 'result.png'))
    assert out.shape == cv2.imread(shared_path('images', 'face.png')).shape


def test_cli_box_json_and_picture(face_npz, tmp_path):
    src = coco_mini('000000196141.jpg')
    img = cv2.imread(src)
    box = (200, 30, 90, 90)
    out, js = tmp_path / 'faces.png', tmp_path / 'face.json'
    r = run('facenet', face_npz, '--img', src, '--box', *box, '--out', out, '--json', js,
            '--net-resolution', 64)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)).shape == img.shape
    data = json.load(open(str(js)))
    assert data['version'] == 1.3 and len(data['people']) == 1
    face = np.array(data['people'][0]['face_keypoints_2d']).reshape(-1, 3)
    assert face.shape == (N, 3) and (face[:, 2] > 0).all()
    # every keypoint lies in the box
    assert ((face[:, 0] >= box[0] - 0.5) & (face[:, 0] <= box[0] + box[2] - 0.5)
            & (face[:, 1] >= box[1] - 0.5) & (face[:, 1] <= box[1] + box[3] - 0.5)).all()


def test_cli_bad_inputs(face_npz, tmp_path):
    face_png = shared_path('images', 'face.png')
    one_line_error(run('facenet', tmp_path / 'none.npz', '--img', face_png),
                   'none.npz: no such weights file',
                   'python convert_model.py facenet pose_iter_116000.caffemodel')
    one_line_error(run('facenet', face_npz, '--img', tmp_path / 'missing.png'),
                   'missing.png: no such file')
    (tmp_path / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    one_line_error(run('facenet', face_npz, '--img', tmp_path / 'corrupt.png'), 'corrupt.png')
    (tmp_path / 'text.npz').write_text('hello')
    one_line_error(run('facenet', tmp_path / 'text.npz', '--img', face_png),
                   'text.npz: not a Chainer .npz')
    one_line_error(run('facenet', face_npz, '--img', face_png, '--box', 500, 500, 40, 40),
                   'lies outside the 158x158 image')
    one_line_error(run('facenet', face_npz, '--img', face_png, '--box', 10, 10, 0, 40),
                   'has no area')
    one_line_error(run('facenet', face_npz, '--img', face_png, '--box', 'nan', 0, 9, 9),
                   'must be finite')
    one_line_error(run('facenet', face_npz, '--img', face_png, '--net-resolution', 60),
                   'multiple of 8')
    assert not (tmp_path / 'result.png').exists() and not os.path.exists(
        os.path.join(REPO, 'result.png.tmp'))


def test_cli_weights_of_the_hand_net(tmp_path):
    from models.HandNet import HandNet
    path = tmp_path / 'handnet.npz'
    chainer.serializers.save_npz(str(path), HandNet(), compression=False)
    r = run('facenet', path, '--img', coco_mini('000000000785.jpg'))
    one_line_error(r, 'handnet.npz: not facenet weights', 'has shape', 'the network needs')


def test_gpu_without_cupy_is_a_one_line_error(face_npz, tmp_path, monkeypatch):
    import face_detector
    monkeypatch.setitem(sys.modules, 'cupy', None)  # as on a machine without CuPy
    with pytest.raises(cli.UserError, match='needs CuPy'):
        face_detector.main(['facenet', str(face_npz), '--img', coco_mini('000000000785.jpg'),
                            '--gpu', '0', '--out', str(tmp_path / 'gpu.png')])
    assert not (tmp_path / 'gpu.png').exists()


def test_net_resolution_limits_refused_before_any_work(face_npz, tmp_path):
    """--net-resolution 100000 meant a 100000 x 100000 net input (tens of GB) failing deep in
    OpenCV or NumPy; now one line before the image is read (and under a 3 GB address-space
    limit in case it was not)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))
    for n in (100000, 744, 0, -8):
        r = run('facenet', face_npz, '--img', coco_mini('000000000785.jpg'),
                '--net-resolution', n, '--out', tmp_path / 'o.png', timeout=120,
                preexec_fn=limit)
        one_line_error(r, '--net-resolution must be a multiple of 8 from 8 to 736', 'got %d' % n)
    r = testing.run('camera_face_demo.py', '--images', tmp_path, '--weights', face_npz,
                    '--net-resolution', 100000, '--no-display', timeout=120, preexec_fn=limit)
    one_line_error(r, '--net-resolution must be a multiple of 8')
    assert os.listdir(tmp_path) == []
