"""evaluate_coco.py: keypoint AP of the embedded model on real COCO val2017 ground truth."""
import functools
import json
import os

import numpy as np
import pytest

import cli
import evaluate_coco
from entity import JointType as J, params
from support import testing
from support.testing import REPO, coco_mini, one_line_error

run = functools.partial(testing.run, 'evaluate_coco.py')  # this module's script


def test_embedded_model_keypoint_ap_on_coco_mini(tmp_path, capsys):
    """4 images, 12 people with keypoints, the defaults (four scales, no flip): issue 20 asks
    AP >= 0.55 (0.513 before it; the thresholds were chosen by cross-validation over every
    annotated image, bench/bench_accuracy.py --cv, not on these 4 images as they are)."""
    out = tmp_path / 'results.json'
    stats = evaluate_coco.evaluate(coco_mini('test_coco.json'),
                                   coco_mini(), out=str(out))
    table = capsys.readouterr().out
    print('coco_mini keypoint AP %.3f  AP50 %.3f  AR %.3f (four scales)'
          % (stats[0], stats[1], stats[5]))
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in table
    assert 'settings: mobilenet, scales 0.5 1 1.5 2, flip off;' in table
    assert stats.shape == (10,)
    assert stats[0] >= 0.55
    with open(out) as f:
        results = json.load(f)
    assert {r['image_id'] for r in results} == {785, 40083, 196141, 197388}
    for r in results:
        assert r['category_id'] == 1 and len(r['keypoints']) == 51 and r['score'] > 0


@pytest.mark.parametrize('flip', [False, True])
def test_one_scale_keypoint_ap_for_the_real_time_demos(flip):
    """The demos' one scale: issue 20 asks AP >= 0.46 (0.439 before it); flip averaging
    (twice the forwards) adds to it."""
    stats = evaluate_coco.evaluate(coco_mini('test_coco.json'),
                                   coco_mini(), scales=params['demo_scales'],
                                   flip=flip, verbose=False)
    print('coco_mini keypoint AP %.3f at one scale, flip %s' % (stats[0], flip))
    assert stats[0] >= (0.50 if flip else 0.46)


def test_poses_to_coco_maps_joints_and_drops_the_neck():
    pose = np.zeros((1, 18, 3))
    pose[0, J.Nose] = 10, 20, 0.9
    pose[0, J.LAnkle] = 30, 40, 0.5
    pose[0, J.Neck] = 50, 60, 0.7  # no COCO keypoint
    (r,) = evaluate_coco.poses_to_coco(pose, [2.5], image_id=7)
    kp = np.array(r['keypoints']).reshape(17, 3)
    assert r['image_id'] == 7 and r['score'] == 2.5
    np.testing.assert_array_equal(kp[0], [10, 20, 1])   # COCO 0 = nose
    np.testing.assert_array_equal(kp[15], [30, 40, 1])  # COCO 15 = left ankle
    assert np.count_nonzero(kp) == 6
    only_neck = np.zeros((1, 18, 3))
    only_neck[0, J.Neck] = 1, 1, 1
    assert evaluate_coco.poses_to_coco(only_neck, [1.0], 7) == []


def test_cli_bad_annotation_file_one_line_error(tmp_path):
    bad = tmp_path / 'ann.json'
    bad.write_text('{"not": "coco"}')
    for ann in (bad, tmp_path / 'missing.json'):
        one_line_error(run('--ann', ann, '--img-dir', tmp_path, '--out', tmp_path / 'r.json'),
                       ann)
    assert not (tmp_path / 'r.json').exists()


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(cli.UserError, match='000000000785.jpg: no such file'):
        evaluate_coco.evaluate(coco_mini('test_coco.json'), str(tmp_path),
                               detector=lambda img: (np.zeros((0, 18, 3)), np.zeros(0)),
                               verbose=False)


def test_cli_end_to_end_one_scale(tmp_path):
    # the README's command shape, with the arch and weights named and one small scale
    p = run('mobilenet', os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'),
            '--ann', coco_mini('test_coco.json'), '--img-dir', coco_mini(), '--scales', '0.5',
            '--out', tmp_path / 'results.json', cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert '4/4' in p.stderr  # the tqdm bar
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]' in p.stdout
    ap = float(p.stdout.split('keypoint AP ')[1].split()[0])
    assert 0 < ap <= 1
    with open(tmp_path / 'results.json') as f:
        assert len(json.load(f)) >= 1


def _subset(tmp_path, image_ids=None):
    """coco_mini's annotation file restricted to ``image_ids`` (None: all), in tmp_path."""
    with open(coco_mini('test_coco.json')) as f:
        doc = json.load(f)
    if image_ids is not None:
        doc['images'] = [i for i in doc['images'] if i['id'] in image_ids]
        doc['annotations'] = [a for a in doc['annotations'] if a['image_id'] in image_ids]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(doc))
    return str(path), doc


def test_annotation_file_without_images_is_an_error(tmp_path):
    """It printed 'keypoint AP 0.000' and exited 0."""
    ann, _ = _subset(tmp_path, image_ids=set())
    p = run('--ann', ann, '--img-dir', coco_mini())
    one_line_error(p, 'ann.json: no images to evaluate')
    assert 'AP' not in p.stdout


def test_undecodable_image_is_skipped_and_the_others_kept(tmp_path, capsys):
    """One damaged image of four stopped the run and threw away the other results; now it is
    skipped with a warning, counted, and left out of the evaluation."""
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    ann, doc = _subset(tmp_path)
    names = sorted(i['file_name'] for i in doc['images'])
    for name in names:
        os.symlink(coco_mini(name), img_dir / name)
    os.remove(img_dir / names[1])
    (img_dir / names[1]).write_bytes(b'\xff\xd8 not a JPEG any more')
    seen = []

    def detector(img):
        seen.append(img.shape)
        return np.zeros((0, 18, 3)), np.zeros(0)
    out = tmp_path / 'results.json'
    stats = evaluate_coco.evaluate(ann, str(img_dir), detector=detector, out=str(out),
                                   verbose=False)
    err = capsys.readouterr().err
    assert len(seen) == 3 and stats.shape == (10,)
    assert '%s: not an image OpenCV can decode' % (img_dir / names[1]) in err
    assert 'warning: 1 of 4 images could not be read and are left out of the evaluation' in err
    assert json.loads(out.read_text()) == []


def test_output_checked_before_any_image_is_read(tmp_path):
    """--out in a missing folder failed only after every image was processed."""
    calls = []
    for out, words in ((tmp_path / 'no' / 'r.json', 'does not exist'),
                       (coco_mini('test_coco.json'), 'is the same file as --ann')):
        with pytest.raises(cli.UserError, match=words):
            evaluate_coco.evaluate(coco_mini('test_coco.json'),
                                   coco_mini(), out=str(out), verbose=False,
                                   detector=lambda img: calls.append(1))
    assert calls == []


def test_exif_orientation_follows_the_annotation_frame(tmp_path):
    """An image tagged with EXIF Orientation 6 is evaluated in the frame its annotation's
    width and height describe: turned when they are the turned size, as stored when they
    are the stored size."""
    import cv2
    from support.testing import jpeg_with_orientation
    stored = cv2.imread(coco_mini('000000000785.jpg'))
    path = tmp_path / 'x.jpg'
    path.write_bytes(jpeg_with_orientation(cv2.imencode('.jpg', stored)[1].tobytes(), 6))
    h, w = stored.shape[:2]
    assert evaluate_coco.read_coco_image(str(path), {'width': w, 'height': h}).shape[:2] == (h, w)
    assert evaluate_coco.read_coco_image(str(path), {'width': h, 'height': w}).shape[:2] == (w, h)
