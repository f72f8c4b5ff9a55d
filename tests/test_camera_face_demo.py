"""camera_face_demo.py end to end: Haar face boxes + a random-weight face net, headless."""
import functools
import json
import os

import chainer
import cv2
import numpy as np
import pytest

import camera_face_demo
from support.testing import one_line_error, read_video, run, shared_path

run_demo = functools.partial(run, 'camera_face_demo.py')
FRAME_SIZE = (160, 120)  # (w, h)


@pytest.fixture(scope='module')
def face_weights(tmp_path_factory):
    from models.FaceNet import FaceNet
    path = tmp_path_factory.mktemp('facenet') / 'facenet_random.npz'
    chainer.serializers.save_npz(str(path), FaceNet(), compression=False)
    return path


@pytest.fixture(scope='module')
def face_video(tmp_path_factory):
    """Two frames: face.png at half size on a grey 160x120 frame, at two places (webcam-like)."""
    face = cv2.imread(shared_path('images', 'face.png'), cv2.IMREAD_COLOR)
    face = cv2.resize(face, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp('video') / 'face.mp4'
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 5.0, FRAME_SIZE)
    w, h = FRAME_SIZE
    for x0 in (20, 40):
        frame = np.full((h, w, 3), 128, np.uint8)
        y0 = (h - face.shape[0]) // 2
        frame[y0:y0 + face.shape[0], x0:x0 + face.shape[1]] = face
        vw.write(frame)
    vw.release()
    return path


def test_video_headless_one_face_per_frame(face_weights, face_video, tmp_path):
    out, jdir = tmp_path / 'annotated.mp4', tmp_path / 'json'
    # --net-resolution 184 (a quarter of the default's pixels) keeps the CPU test short
    r = run_demo('--video', face_video, '--weights', face_weights, '--out', out,
                 '--json-dir', jdir, '--no-display', '--net-resolution', 184)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('done: 2 frames, 0 skipped, mean ')
    assert '2 faces found' in r.stdout

    frames = read_video(face_video)
    out_frames = read_video(out)
    assert len(out_frames) == 2 and out_frames[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    cascade = camera_face_demo.load_cascade()
    names = sorted(os.listdir(str(jdir)))
    assert names == ['face_%012d_keypoints.json' % i for i in range(2)]
    for name, frame in zip(names, frames):
        data = json.load(open(str(jdir / name)))
        assert data['version'] == 1.3 and len(data['people']) == 1
        person = data['people'][0]
        assert person['pose_keypoints_2d'] == []
        face = np.array(person['face_keypoints_2d'])
        assert face.shape == (70 * 3,) and np.isfinite(face).all()
        # found keypoints lie inside the crop the face net saw
        (rect,) = camera_face_demo.detect_face_rects(cascade, frame)
        x, y, w, h = camera_face_demo.face_crop_box(rect)
        pts = face.reshape(70, 3)
        found = pts[pts[:, 2] > 0]
        assert ((found[:, 0] >= x - 1) & (found[:, 0] <= x + w + 1)
                & (found[:, 1] >= y - 1) & (found[:, 1] <= y + h + 1)).all()


def test_bad_inputs(tmp_path, face_weights):
    one_line_error(run_demo('--weights', tmp_path / 'none.npz'),
                   'none.npz: face net weights not found (make them with: python convert_model.py',
                   notes_first=True)
    bad = tmp_path / 'bad.xml'
    bad.write_text('hello')
    one_line_error(run_demo('--cascade', bad), 'bad.xml: not an OpenCV cascade file',
                   notes_first=True)
    one_line_error(run_demo('--device', 99, '--weights', face_weights),
                   'cannot open camera --device 99', notes_first=True)
    one_line_error(run_demo('--video', tmp_path / 'missing.mp4', '--weights', face_weights),
                   'missing.mp4: video file not found', notes_first=True)
    empty = tmp_path / 'empty'
    empty.mkdir()
    one_line_error(run_demo('--images', empty, '--weights', face_weights),
                   'empty: folder has no files', notes_first=True)


def test_face_crop_box_is_the_cascade_box_enlarged_about_its_centre():
    from entity import params
    s = params['face_crop_scale']
    x, y, w, h = camera_face_demo.face_crop_box((10, 20, 40, 40))
    assert (x + w / 2, y + h / 2) == (30.0, 40.0)
    assert (w, h) == (40 * s, 40 * s)


def test_face_boxes_tracked_and_smoothed(face_video):
    """The face net gets the cascade's box enlarged: smoothed over time with --smooth (the
    second frame's box between the two raw boxes), the raw one with --no-smooth; the ID is
    person_id with --track, -1 without."""
    frames = read_video(face_video)
    cascade = camera_face_demo.load_cascade()
    raw = [camera_face_demo.face_crop_box(camera_face_demo.detect_face_rects(cascade, f)[0])
           for f in frames]
    assert raw[1][0] - raw[0][0] > 10  # the face moved right
    for track, smooth in ((True, True), (False, False), (True, False), (False, True)):
        boxes = []

        def detector(img, box):
            boxes.append(box)
            return np.zeros((70, 3))
        process = camera_face_demo.face_process(cascade, detector, track, smooth)
        ids = [process(f, t)[1]['people'][0]['person_id'] for f, t in zip(frames, (0.0, 0.2))]
        assert ids == ([[0], [0]] if track else [[-1], [-1]])
        np.testing.assert_allclose(boxes[0], raw[0])
        if smooth:
            assert raw[0][0] < boxes[1][0] < raw[1][0]
            assert boxes[1][2] == pytest.approx(raw[1][2], abs=abs(raw[1][2] - raw[0][2]) + 1e-6)
        else:
            np.testing.assert_allclose(boxes[1], raw[1])
