"""demo.py: face/hand boxes from real body poses vs COCO ground truth; the CLI end to end."""
import functools
import json
import os
import sys

import cv2
import numpy as np
import pytest

from entity import JointType, params
from face_detector import face_box_from_pose
from hand_detector import hand_boxes_from_pose
from support import testing
from support.coco_mini import coco_json
from support.testing import REPO, coco_mini, one_line_error, shared_path

run = functools.partial(testing.run, 'demo.py')  # this module's script
HEAD = [JointType.Nose, JointType.LEye, JointType.REye, JointType.LEar, JointType.REar]


def gt_people():
    """{file name: [(18, 3) GT pose in our joint order (x, y, visibility), area]}."""
    data = coco_json()
    names = dict((im['id'], im['file_name']) for im in data['images'])
    out = dict((n, []) for n in names.values())
    for a in data['annotations']:
        if a['num_keypoints'] == 0:
            continue
        kp = np.array(a['keypoints'], float).reshape(17, 3)
        pose = np.zeros((18, 3))
        pose[params['coco_joint_indices']] = kp
        out[names[a['image_id']]].append((pose, a['area']))
    return out


def match(detected, gts):
    """Greedy one-to-one matching of detected poses to GT people by the mean distance of the
    joints both have, relative to the person's size; pairs closer than 0.5 size units."""
    pairs = []
    for i, det in enumerate(detected):
        for j, (gt, area) in enumerate(gts):
            both = (det[:, 2] > 0) & (gt[:, 2] > 0)
            if both.sum() < 3:
                continue
            d = np.hypot(*(det[both, :2] - gt[both, :2]).T).mean() / np.sqrt(area)
            pairs.append((d, i, j))
    used_i, used_j, out = set(), set(), []
    for d, i, j in sorted(pairs):
        if d < 0.5 and i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j))
    return out


def inside(box, pt, slack=0.0):
    x, y, w, h = box
    return x - slack <= pt[0] <= x + w + slack and y - slack <= pt[1] <= y + h + slack


@pytest.fixture(scope='module')
def detections():
    from image_io import read_image
    from pose_detector import PoseDetector
    body = PoseDetector(scales=[1])  # the embedded model, one scale (fast)
    return dict((name, body(read_image(coco_mini(name)))[0])
                for name in gt_people())


def test_face_and_hand_boxes_contain_the_labelled_points(detections):
    gts = gt_people()
    n_matched = n_faces = n_head_points = n_hands = 0
    for name, poses in detections.items():
        for i, j in match(poses, gts[name]):
            n_matched += 1
            det, (gt, _) = poses[i], gts[name][j]
            box = face_box_from_pose(det)
            if box is not None:
                n_faces += 1
                for k in HEAD:
                    if gt[k, 2] > 0:
                        n_head_points += 1
                        # 1 px: COCO points are clicked on whole pixels
                        assert inside(box, gt[k, :2], 1.0), (name, j, JointType(k).name, box)
            for side, wrist in (('left', JointType.LWrist), ('right', JointType.RWrist)):
                box = hand_boxes_from_pose(det)[side]
                # a box is centred near the detected wrist: it cannot be asked to hold the
                # labelled one when the net put the wrist more than half a box away
                if (box is not None and gt[wrist, 2] > 0
                        and np.hypot(*(det[wrist, :2] - gt[wrist, :2])) <= box[2] / 2):
                    n_hands += 1
                    assert inside(box, gt[wrist, :2], 1.0), (name, j, side, box)
    # 12 labelled people in coco_mini; the checks above must not pass vacuously
    assert n_matched >= 11 and n_faces >= 11 and n_head_points >= 40 and n_hands >= 10, \
        (n_matched, n_faces, n_head_points, n_hands)


# ----------------------------------------------------------------------------- CLI

def test_original_command_verbatim_without_face_and_hand_weights(tmp_path):
    """python demo.py --img data/dinner.png: with no face/hand npz the body part still runs,
    and one line says which files are missing and how to make them."""
    (tmp_path / 'data').mkdir()
    os.symlink(shared_path('images', 'dinner.png'), str(tmp_path / 'data' / 'dinner.png'))
    r = run('--img', 'data/dinner.png', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = cv2.imread(str(tmp_path / 'result.png'))
    assert out.shape == cv2.imread(shared_path('images', 'dinner.png')).shape
    assert 'Saving result into result.png' in r.stdout
    if not any(os.path.exists(os.path.join(REPO, params['default_weights'][a]))
               for a in ('facenet', 'handnet')):
        notes = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(notes) == 1, r.stderr
        assert ('models/facenet.npz and models/handnet.npz not found' in notes[0]
                and 'python convert_model.py facenet pose_iter_116000.caffemodel '
                    'models/facenet.npz' in notes[0]
                and 'python convert_model.py handnet pose_iter_102000.caffemodel '
                    'models/handnet.npz' in notes[0]), notes[0]


def test_body_face_hands_json(face_npz, hand_npz, tmp_path):
    src = coco_mini('000000196141.jpg')
    out, js = tmp_path / 'out.png', tmp_path / 'people.json'
    r = run('--img', src, '--face-weights', face_npz, '--hand-weights', hand_npz,
            '--out', out, '--json', js, '--scales', 1,
            '--face-net-resolution', 64, '--hand-net-resolution', 64)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ''
    assert cv2.imread(str(out)).shape == cv2.imread(src).shape
    people = json.load(open(str(js)))['people']
    assert len(people) >= 4
    n_faces = n_hands = 0
    for p in people:
        pose = np.array(p['pose_keypoints_2d']).reshape(18, 3)
        face = np.array(p['face_keypoints_2d']).reshape(-1, 3)
        assert face.shape == (70, 3)
        box = face_box_from_pose(pose)
        if box is None:
            assert (face == 0).all()
        else:  # the biased random net finds every keypoint, inside the box
            n_faces += 1
            assert (face[:, 2] > 0).all()
            assert all(inside(np.add(box, (-1, -1, 2, 2)), pt) for pt in face[:, :2])
        boxes = hand_boxes_from_pose(pose)
        for side in ('left', 'right'):
            hand = np.array(p['hand_%s_keypoints_2d' % side]).reshape(-1, 3)
            assert hand.shape == (21, 3)
            if boxes[side] is None:
                assert (hand == 0).all()
            else:
                n_hands += 1
                assert all(inside(np.add(boxes[side], (-1, -1, 2, 2)), pt)
                           for pt in hand[:, :2])
    assert n_faces >= 2 and n_hands >= 2


def test_no_people_and_skipped_parts(face_npz, tmp_path):
    img = np.full((120, 160, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / 'grey.png'), img)
    js = tmp_path / 'p.json'
    r = run('--img', tmp_path / 'grey.png', '--face-weights', face_npz, '--no-hands',
            '--out', tmp_path / 'o.png', '--json', js, '--scales', 1)
    assert r.returncode == 0, r.stderr
    assert 'Found 0 people' in r.stdout and r.stderr.strip() == ''
    assert json.load(open(str(js))) == {'version': 1.3, 'people': []}
    assert cv2.imread(str(tmp_path / 'o.png')).shape == img.shape


def test_bad_inputs(hand_npz, tmp_path):
    photo = coco_mini('000000196141.jpg')
    one_line_error(run('--img', tmp_path / 'none.png'), 'none.png: no such file')
    (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8\xff garbage')
    one_line_error(run('--img', tmp_path / 'bad.jpg'), 'bad.jpg')
    one_line_error(run('--img', photo, '--face-weights', tmp_path / 'f.npz'),
                   'f.npz: no such weights file', 'convert_model.py facenet')
    one_line_error(run('--img', photo, '--face-weights', hand_npz, '--no-hands'),
                   'not facenet weights')
    one_line_error(run('--img', photo, '--pose-weights', hand_npz), 'not mobilenet weights')
    assert not os.path.exists(os.path.join(str(tmp_path), 'result.png'))


def test_gpu_without_cupy_is_a_one_line_error(tmp_path, monkeypatch):
    import cli
    import demo
    monkeypatch.setitem(sys.modules, 'cupy', None)  # as on a machine without CuPy
    with pytest.raises(cli.UserError, match='needs CuPy'):
        demo.main(['--img', coco_mini('000000196141.jpg'), '--gpu', '0',
                   '--out', str(tmp_path / 'gpu.png')])
    assert not (tmp_path / 'gpu.png').exists()
