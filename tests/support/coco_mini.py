"""Lay tests/data/coco_mini out as a tiny COCO 2017 directory (shared by the COCO tests).

train2017 gets all four images, val2017 two of them; annotations/person_keypoints_*.json
hold those images' entries of test_coco.json.  Images are symlinked unless asked otherwise.
"""
import copy
import json
import os

from support.testing import coco_mini

ALL_IDS = (785, 40083, 196141, 197388)
VAL_IDS = (785, 40083)


def coco_json():
    with open(coco_mini('test_coco.json')) as f:
        return json.load(f)


def subset(data, ids):
    out = copy.deepcopy(data)
    out['images'] = [im for im in data['images'] if im['id'] in ids]
    out['annotations'] = [a for a in data['annotations'] if a['image_id'] in ids]
    return out


def make_coco_dir(root, data=None, splits=(('train', ALL_IDS), ('val', VAL_IDS)), link=True):
    """Build ``root`` as a COCO dir; ``data`` replaces test_coco.json's content."""
    data = coco_json() if data is None else data
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    for split, ids in splits:
        img_dir = os.path.join(root, '%s2017' % split)
        os.makedirs(img_dir, exist_ok=True)
        sub = subset(data, ids)
        for im in sub['images']:
            src = coco_mini(im['file_name'])
            dst = os.path.join(img_dir, im['file_name'])
            if link:
                os.symlink(src, dst)
            else:
                with open(src, 'rb') as f, open(dst, 'wb') as g:
                    g.write(f.read())
        with open(os.path.join(root, 'annotations', 'person_keypoints_%s2017.json' % split),
                  'w') as f:
            json.dump(sub, f)
    return str(root)


def make_coco_dir_with_masks(root, **kw):
    """``make_coco_dir`` plus the ignore masks of both splits (gen_ignore_mask.py)."""
    import gen_ignore_mask
    root = make_coco_dir(root, **kw)
    for split in ('train', 'val'):
        gen_ignore_mask.process_split(root, split, progress=False)
    return root
