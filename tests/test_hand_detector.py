"""hand_detector.py: the mirrored left hand, boxes from the arm, drawing, the CLI end to end."""
import functools
import json
import os
import sys

import cv2
import numpy as np
import pytest

import cli
from entity import JointType, params
from drawing import draw_hand_keypoints
from hand_detector import HandDetector, hand_boxes_from_pose
from support import caffe_files, testing
from support.cmu_nets import deploy_prototxt
from support.keypoint_nets import TOL, PeakNet, cells, expected
from support.testing import coco_mini, needs_cv2_caffe, one_line_error, shared_path

run = functools.partial(testing.run, 'hand_detector.py')  # this module's script
N = params['hand_n_keypoints']
IMG = np.full((300, 400, 3), 90, np.uint8)


@pytest.mark.parametrize('box', [(131, 77, 138, 138), (-60, 100, 138, 138),
                                 (330, 120, 138, 138), (200, -50, 138, 138),
                                 (100, 240, 138, 138)])
@pytest.mark.parametrize('hand_type', ['left', 'right'])
def test_peaks_map_back_for_both_hands(box, hand_type):
    """The left hand goes through the net mirrored (hand_mirrored_side): a peak in map column
    c of the net's output is column MAP-1-c of the crop."""
    c = cells(N, seed=4)
    net = PeakNet(c, N + 1)
    kp = HandDetector(model=net)(IMG, box, hand_type)
    assert kp.shape == (N, 3)
    mirrored = hand_type == params['hand_mirrored_side']
    np.testing.assert_allclose(kp[:, :2], expected(c, box[0], box[1], 138, mirror=mirrored),
                               atol=TOL)
    # the input itself was flipped for the mirrored hand
    img = np.zeros_like(IMG)
    img[:, :200] = 255  # left half white
    net2 = PeakNet(c, N + 1)
    HandDetector(model=net2)(img, (130, 50, 140, 140), hand_type)
    left_cols = net2.inputs[0][0, :, :, :10].mean()
    assert (left_cols < 0) == mirrored  # mirrored: the dark right side is now on the left


def test_mirrored_side_is_the_left_hand_as_openpose():
    assert params['hand_mirrored_side'] == 'left'


def test_bad_hand_type():
    with pytest.raises(cli.UserError, match="'left' or 'right'"):
        HandDetector(model=PeakNet(cells(N), N + 1))(IMG, (10, 10, 50, 50), 'middle')


def test_hand_boxes_from_pose_follow_openpose():
    pose = np.zeros((18, 3))
    pose[JointType.LShoulder] = (100, 100, 0.9)
    pose[JointType.LElbow] = (100, 160, 0.9)   # upper arm 60
    pose[JointType.LWrist] = (100, 200, 0.9)   # forearm 40 < 0.9 * 60
    boxes = hand_boxes_from_pose(pose)
    assert boxes['right'] is None
    x, y, w, h = boxes['left']
    assert w == h == pytest.approx(1.5 * 0.9 * 60)
    assert (x + w / 2, y + h / 2) == pytest.approx((100, 200 + 0.33 * 40))
    pose[JointType.LShoulder, 2] = 0  # no shoulder: the forearm alone
    assert hand_boxes_from_pose(pose)['left'][2] == pytest.approx(1.5 * 40)
    pose[JointType.LElbow, 2] = 0.05  # elbow below box_joint_thresh: no box
    assert hand_boxes_from_pose(pose)['left'] is None


def test_drawing_one_colour_per_finger():
    img = np.zeros((120, 120, 3), np.uint8)
    kp = np.zeros((N, 3))
    kp[0] = (60, 110, 1)
    for f in range(5):
        for j in range(4):
            kp[1 + 4 * f + j] = (20 + 20 * f, 90 - 20 * j, 1)
    out = draw_hand_keypoints(img, kp)
    assert (img == 0).all()
    tips = [tuple(out[30, 20 + 20 * f]) for f in range(5)]
    assert len(set(tips)) == 5 and all(any(t) for t in tips)


# ----------------------------------------------------------------------------- CLI

def test_original_command_verbatim(hand_npz, tmp_path):
    """python hand_detector.py handnet models/handnet.npz --img data/hand.png -> result.png"""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'data').mkdir()
    os.symlink(str(hand_npz), str(tmp_path / 'models' / 'handnet.npz'))
    os.symlink(shared_path('images', 'hand.png'), str(tmp_path / 'data' / 'hand.png'))
    r = run('handnet', 'models/handnet.npz', '--img', 'data/hand.png', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'Saving result into result.png' in r.stdout
    assert cv2.imread(str(tmp_path / 'result.png')).shape == (296, 296, 3)


@pytest.mark.parametrize('hand', ['left', 'right'])
def test_cli_box_json_and_picture(hand_npz, tmp_path, hand):
    src = shared_path('images', 'hand.png')
    box = (-20, 100, 120, 120)  # past the left border
    out, js = tmp_path / 'hand.png', tmp_path / 'hand.json'
    r = run('handnet', hand_npz, '--img', src, '--box', *box, '--hand', hand, '--out', out,
            '--json', js, '--net-resolution', 64)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)).shape == (296, 296, 3)
    person = json.load(open(str(js)))['people'][0]
    other = 'right' if hand == 'left' else 'left'
    assert person['hand_%s_keypoints_2d' % other] == []
    kp = np.array(person['hand_%s_keypoints_2d' % hand]).reshape(-1, 3)
    assert kp.shape == (N, 3) and (kp[:, 2] > 0).all()
    assert ((kp[:, 0] >= box[0] - 0.5) & (kp[:, 0] <= box[0] + box[2] - 0.5)
            & (kp[:, 1] >= box[1] - 0.5) & (kp[:, 1] <= box[1] + box[3] - 0.5)).all()


def test_cli_bad_inputs(hand_npz, tmp_path):
    hand_png = shared_path('images', 'hand.png')
    one_line_error(run('handnet', tmp_path / 'none.npz', '--img', hand_png),
                   'none.npz: no such weights file',
                   'python convert_model.py handnet pose_iter_102000.caffemodel')
    one_line_error(run('handnet', hand_npz, '--img', tmp_path / 'missing.png'),
                   'missing.png: no such file')
    one_line_error(run('handnet', hand_npz, '--img', hand_png, '--box', -300, 0, 100, 100),
                   'lies outside the 296x296 image')
    one_line_error(run('handnet', hand_npz, '--img', hand_png, '--box', 0, 0, 2000, 2000),
                   'more than 4 times the 296x296 image')
    # weights of the face net
    face = tmp_path / 'face.npz'
    np.savez(str(face), **{'conv1_1/W': np.zeros((64, 3, 3, 3), np.float32)})
    one_line_error(run('handnet', face, '--img', hand_png), 'face.npz: not handnet weights')
    assert not (tmp_path / 'result.png').exists()


def test_gpu_without_cupy_is_a_one_line_error(hand_npz, tmp_path, monkeypatch):
    import hand_detector
    monkeypatch.setitem(sys.modules, 'cupy', None)  # as on a machine without CuPy
    with pytest.raises(cli.UserError, match='needs CuPy'):
        hand_detector.main(['handnet', str(hand_npz), '--img', coco_mini('000000000785.jpg'),
                            '--gpu', '0', '--out', str(tmp_path / 'gpu.png')])
    assert not (tmp_path / 'gpu.png').exists()


@needs_cv2_caffe
def test_keypoints_match_an_opencv_caffe_reference(tmp_path):
    """The whole crop -> net -> peaks pipeline against an independent one: a random-weight
    caffemodel built from CMU's hand prototxt (as support.cmu_nets writes it), converted by
    convert_model.py for us, and run by OpenCV's Caffe importer on a crop the test cuts,
    mirrors and normalises itself (x / 256 - 0.5, BGR), maps resized with cv2 and
    argmax'ed.  Sub-pixel refinement moves ours by at most half a pixel of the crop."""
    import convert_model
    insize, side = 64, 40
    text = deploy_prototxt('handnet')
    layers = caffe_files.random_conv_weights(caffe_files.conv_layers_from_prototxt(text), seed=7)
    for name, (w, b) in layers:
        if name == 'Mconv7_stage6':
            b += 0.4  # every map gets a peak above hand_heatmap_peak_thresh
    caffemodel, npz = str(tmp_path / 'hand.caffemodel'), str(tmp_path / 'hand.npz')
    caffe_files.write_caffemodel(caffemodel, layers)
    convert_model.convert('handnet', caffemodel, npz)
    proto = tmp_path / 'hand.prototxt'
    proto.write_text(caffe_files.prototxt_with_input(text, insize, insize))
    ref_net = cv2.dnn.readNetFromCaffe(str(proto), caffemodel)
    ref_net.enableWinograd(False)

    # a photo textured where the crop is cut (grass and infield)
    img = cv2.imread(coco_mini('000000196141.jpg'), cv2.IMREAD_COLOR)
    detector = HandDetector(npz, insize=insize)
    box = (-12, 150, side, side)  # past the left border: 12 columns of black padding
    results = {}
    for hand_type in ('left', 'right'):
        ours = results[hand_type] = detector(img, box, hand_type)
        crop = np.zeros((side, side, 3), np.uint8)
        crop[:, 12:] = img[150:150 + side, 0:side - 12]
        x = cv2.resize(crop, (insize, insize), interpolation=cv2.INTER_CUBIC)
        if hand_type == 'left':
            x = x[:, ::-1]
        ref_net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32) / 256 - 0.5)
        maps = ref_net.forward('net_output')[0, :N]
        if hand_type == 'left':
            maps = maps[:, :, ::-1]
        ref = np.zeros((N, 3))
        for k, m in enumerate(maps):
            m = cv2.resize(np.ascontiguousarray(m), (insize, insize), interpolation=cv2.INTER_CUBIC)
            m = cv2.resize(m, (side, side), interpolation=cv2.INTER_CUBIC)
            y, x_ = np.unravel_index(np.argmax(m), m.shape)
            ref[k] = (x_ - 12, y + 150, m[y, x_])
        assert (ref[:, 2] > params['hand_heatmap_peak_thresh']).all()
        assert (ours[:, 2] > 0).all()
        np.testing.assert_allclose(ours[:, :2], ref[:, :2], atol=0.5 + 1e-3)
        np.testing.assert_allclose(ours[:, 2], ref[:, 2], rtol=1e-3, atol=1e-3)
    # the random net is not mirror-symmetric: mirroring changes the answer
    assert np.abs(results['left'][:, :2] - results['right'][:, :2]).max() > 3
