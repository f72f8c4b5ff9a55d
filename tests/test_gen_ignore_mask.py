"""gen_ignore_mask.py on coco_mini (+ crowd regions in both RLE forms added by the test)."""
import functools
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from entity import params
from support import testing
from support.coco_mini import coco_json, make_coco_dir
from support.testing import one_line_error

run = functools.partial(testing.run, 'gen_ignore_mask.py', timeout=120)  # this module's script

UNLABELLED_IMAGES = (40083, 196141)


def add_crowds(data):
    """A crowd region per image: uncompressed RLE on 197388, compressed RLE on 785."""
    sizes = {im['id']: (im['height'], im['width']) for im in data['images']}
    h, w = sizes[197388]
    m = np.zeros((h, w), np.uint8, order='F')
    m[150:230, 0:200] = 1  # overlaps the labelled person on the left edge (543117)
    counts, prev, run = [], 0, 0
    for v in m.flatten(order='F'):  # uncompressed RLE: column-major run lengths from 0
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    data['annotations'].append({'id': 900001, 'image_id': 197388, 'category_id': 1, 'iscrowd': 1,
                                'segmentation': {'size': [h, w], 'counts': counts},
                                'area': int(m.sum()), 'bbox': [0, 150, 200, 80],
                                'num_keypoints': 0, 'keypoints': [0] * 51})
    h, w = sizes[785]
    m = np.zeros((h, w), np.uint8, order='F')
    m[10:60, 20:120] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle['counts'] = rle['counts'].decode('ascii')
    data['annotations'].append({'id': 900002, 'image_id': 785, 'category_id': 1, 'iscrowd': 1,
                                'segmentation': rle, 'area': int(m.sum()),
                                'bbox': [20, 10, 100, 50], 'num_keypoints': 0,
                                'keypoints': [0] * 51})
    return data


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory):
    root = make_coco_dir(str(tmp_path_factory.mktemp('coco')), data=add_crowds(coco_json()))
    p = run('--split', 'train', '--coco-dir', root)
    assert p.returncode == 0, p.stderr
    return root


def load(coco_dir):
    coco = COCO(os.path.join(coco_dir, 'annotations', 'person_keypoints_train2017.json'))
    masks = {}
    for img_id in coco.getImgIds():
        path = os.path.join(coco_dir, 'ignore_mask_train2017', '%012d.png' % img_id)
        m = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert m is not None and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        masks[img_id] = m > 0
    return coco, masks


def labelled(ann):
    return (not ann['iscrowd'] and ann['num_keypoints'] >= params['min_keypoints']
            and ann['area'] > params['min_area'])


def test_unlabelled_people_are_covered(coco_dir):
    coco, masks = load(coco_dir)
    checked = 0
    for img_id in UNLABELLED_IMAGES:
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            if labelled(ann):
                continue
            person = coco.annToMask(ann) > 0
            coverage = (masks[img_id] & person).sum() / person.sum()
            assert coverage >= 0.95, (ann['id'], coverage)
            checked += 1
    assert checked == 2  # annotations 1202706 and 508900 (num_keypoints 0)


def test_crowds_are_covered_except_where_labelled_people_are(coco_dir):
    coco, masks = load(coco_dir)
    for ann_id in (900001, 900002):
        ann = coco.loadAnns([ann_id])[0]
        crowd = coco.annToMask(ann) > 0
        people = np.zeros_like(crowd)
        for other in coco.loadAnns(coco.getAnnIds(imgIds=[ann['image_id']])):
            if labelled(other):
                people |= coco.annToMask(other) > 0
        np.testing.assert_array_equal(masks[ann['image_id']] & crowd, crowd & ~people)
    # the uncompressed crowd overlaps person 543117, who stays unmasked
    p543117 = coco.annToMask(coco.loadAnns([543117])[0]) > 0
    crowd = coco.annToMask(coco.loadAnns([900001])[0]) > 0
    assert (p543117 & crowd).sum() > 500
    assert not (masks[197388] & p543117).any()


def test_labelled_keypoints_are_never_masked(coco_dir):
    coco, masks = load(coco_dir)
    n = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        if not labelled(ann):
            continue
        m = masks[ann['image_id']]
        for x, y, v in np.array(ann['keypoints']).reshape(-1, 3):
            if v > 0:
                assert not m[int(round(y)), int(round(x))], (ann['id'], x, y)
                n += 1
    assert n == 181  # every labelled keypoint of coco_mini


def test_image_without_ignored_people_gets_an_empty_mask(coco_dir):
    _, masks = load(coco_dir)
    # 785 has one labelled skier: only the added crowd rectangle is masked
    assert masks[785].sum() == 50 * 100 and masks[785][10:60, 20:120].all()


def test_rerun_skips_finished_masks_and_writes_atomically(coco_dir):
    mask_dir = os.path.join(coco_dir, 'ignore_mask_train2017')
    before = {f: os.stat(os.path.join(mask_dir, f)).st_mtime_ns for f in os.listdir(mask_dir)}
    assert sorted(before) == ['%012d.png' % i for i in (785, 40083, 196141, 197388)]
    os.remove(os.path.join(mask_dir, '000000040083.png'))
    p = run('--split', 'train', '--coco-dir', coco_dir, '--no-progress')
    assert p.returncode == 0, p.stderr
    assert 'train2017: 1 masks written, 3 already done' in p.stdout
    after = {f: os.stat(os.path.join(mask_dir, f)).st_mtime_ns for f in os.listdir(mask_dir)}
    assert sorted(after) == sorted(before)  # no temporary file left behind
    for f in before:
        if f != '000000040083.png':
            assert after[f] == before[f]


def test_vis_writes_overlays(coco_dir):
    p = run('--split', 'train', '--coco-dir', coco_dir, '--vis', '--no-progress')
    assert p.returncode == 0, p.stderr
    vis_dir = os.path.join(coco_dir, 'ignore_mask_train2017_vis')
    img = cv2.imread(os.path.join(vis_dir, '000000196141.png'))
    assert img.shape == (429, 2 * 640, 3)
    _, masks = load(coco_dir)
    photo = cv2.imread(os.path.join(coco_dir, 'train2017', '000000196141.jpg'))
    right = img[:, 640:].astype(int)
    # right half: the photo, tinted red exactly where the mask is
    changed = np.abs(right - photo).sum(axis=2) > 30
    m = masks[196141]
    assert (changed & m).sum() / m.sum() > 0.9 and (changed & ~m).sum() == 0


def test_missing_coco_dir_names_getdata(tmp_path):
    one_line_error(run('--coco-dir', str(tmp_path / 'nope')), 'getData.sh')


def test_corrupt_annotation_json_is_one_line_error(tmp_path):
    root = make_coco_dir(str(tmp_path / 'coco'))
    ann = os.path.join(root, 'annotations', 'person_keypoints_val2017.json')
    with open(ann, 'r+') as f:
        f.truncate(5000)  # cut mid-file
    one_line_error(run('--split', 'val', '--coco-dir', root), 'corrupt annotation JSON', ann)
    assert not os.path.exists(os.path.join(root, 'ignore_mask_val2017'))


def test_malformed_segmentation_names_the_annotation(tmp_path):
    data = coco_json()
    bad = [a for a in data['annotations'] if a['image_id'] == 785][0]
    bad['segmentation'] = [[1.0, 2.0, 'x']]
    root = make_coco_dir(str(tmp_path / 'coco'), data=data)
    one_line_error(run('--split', 'val', '--coco-dir', root, '--no-progress'),
                   'annotation %d: unreadable segmentation' % bad['id'])
