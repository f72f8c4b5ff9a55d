"""Write one ignore mask per COCO image: the regions the training loss must not look at.

A mask covers every crowd region and every person annotated with too few keypoints
(``num_keypoints < min_keypoints``) or too small (``area <= min_area``): such people are real
people without usable labels, so the network must not be taught that they are background.
Unlike the original, pixels of the people we do train on are taken out of the mask (so
overlapping crowd or unlabelled regions never hide a labelled person), and the result does not
depend on annotation order.  Polygons and RLE are rasterised with pycocotools.

Masks are 8-bit PNGs (255 = ignore), ``coco_dir/ignore_mask_{split}2017/{image id:012d}.png``,
one for every image (also empty ones), each written atomically: a rerun skips finished images.
``--vis`` also writes overlays (annotations | mask) to ``ignore_mask_{split}2017_vis/`` and
shows them when a display is available.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import os
import sys

import cv2
import numpy as np

import cli
import frame_loop
from coco_data_loader import is_training_person, load_coco, person_category_ids, split_paths
from entity import params


def ann_mask(coco, ann, h, w):
    """Boolean HxW mask of one annotation (polygon or RLE), via pycocotools."""
    from pycocotools import mask as mask_utils
    seg = ann.get('segmentation')
    if not seg:
        return np.zeros((h, w), bool)
    try:
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get('counts'), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = dict(seg, counts=seg['counts'].encode('ascii')
                       if isinstance(seg['counts'], str) else seg['counts'])
        m = mask_utils.decode(rle)
    except Exception as e:  # pycocotools raises TypeError/ValueError/IndexError/... on bad data
        raise cli.UserError('annotation %s: unreadable segmentation (%s: %s)'
                            % (ann.get('id'), type(e).__name__, e))
    if m.shape != (h, w):
        raise cli.UserError('annotation %s: segmentation is %dx%d, image %dx%d'
                            % (ann.get('id'), m.shape[1], m.shape[0], w, h))
    return m.astype(bool)


def ignore_mask(coco, anns, h, w):
    """Bool HxW: crowds and under-labelled people, minus the people we train on."""
    ignore = np.zeros((h, w), bool)
    keep = np.zeros((h, w), bool)
    for ann in anns:
        m = ann_mask(coco, ann, h, w)
        if is_training_person(ann):
            keep |= m
        else:
            ignore |= m
    return ignore & ~keep


def draw_annotations(img, coco, anns):
    """Annotations coloured by role: red = trained on, green = ignored person, blue = crowd."""
    out = img.astype(np.float32)
    h, w = img.shape[:2]
    for ann in anns:
        m = ann_mask(coco, ann, h, w)
        colour = ((255, 0, 0) if ann.get('iscrowd') else
                  (0, 0, 255) if is_training_person(ann) else (0, 255, 0))
        out[m] = out[m] * 0.4 + np.array(colour, np.float32) * 0.6
    out = out.astype(np.uint8)
    for ann in anns:
        for x, y, v in np.array(ann.get('keypoints', []), np.float32).reshape(-1, 3):
            if v > 0:
                cv2.circle(out, (int(round(x)), int(round(y))), 3,
                           (255, 255, 0) if v == 2 else (255, 0, 255), -1)
    return out


def draw_mask(img, mask):
    out = img.copy()
    out[mask] = (out[mask] * 0.3 + np.array((0, 0, 255)) * 0.7).astype(np.uint8)
    return out


def write_png(path, img):
    with cli.atomic_output(path) as tmp:
        if not cv2.imwrite(tmp, img):
            raise cli.UserError('%s: cannot write' % path)


def process_split(coco_dir, split, vis=False, overwrite=False, show=False, progress=True):
    """Write the masks of one split; returns (written, skipped as already done, vis failures)."""
    from tqdm import tqdm
    coco = load_coco(coco_dir, split)
    _, img_dir, mask_dir = split_paths(coco_dir, split)
    os.makedirs(mask_dir, exist_ok=True)
    vis_dir = mask_dir + '_vis'
    if vis:
        os.makedirs(vis_dir, exist_ok=True)
    cat_ids = person_category_ids(coco)
    img_ids = sorted(coco.getImgIds(catIds=cat_ids))
    done = set(os.listdir(mask_dir))
    written = skipped = unreadable = 0
    for img_id in tqdm(img_ids, desc='ignore masks %s2017' % split, disable=not progress,
                       unit='img'):
        name = '%012d.png' % img_id
        if name in done and not overwrite and not vis:
            skipped += 1
            continue
        info = coco.imgs[img_id]
        try:
            h, w = int(info['height']), int(info['width'])
        except (KeyError, TypeError, ValueError):
            raise cli.UserError('image %s: no valid height/width in the annotation file' % img_id)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], catIds=cat_ids, iscrowd=None))
        mask = ignore_mask(coco, anns, h, w)
        if name in done and not overwrite:
            skipped += 1
        else:
            write_png(os.path.join(mask_dir, name), mask.astype(np.uint8) * 255)
            written += 1
        if vis:
            img = cv2.imread(os.path.join(img_dir, info['file_name']), cv2.IMREAD_COLOR)
            if img is None or img.shape[:2] != (h, w):
                unreadable += 1
                print('warning: %s: cannot decode it (or wrong size), no overlay'
                      % os.path.join(img_dir, info['file_name']), file=sys.stderr)
                continue
            pair = np.hstack([draw_annotations(img, coco, anns), draw_mask(img, mask)])
            write_png(os.path.join(vis_dir, name), pair)
            if show:
                cv2.imshow('ignore mask', pair)
                if cv2.waitKey(0) & 0xFF == ord('q'):
                    show = False
    return written, skipped, unreadable


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--split', choices=['train', 'val'], action='append',
                   help='split to process (repeatable; default: train and val)')
    p.add_argument('--coco-dir', default=params['coco_dir'],
                   help='COCO 2017 directory (default: entity.params["coco_dir"] = %(default)s)')
    p.add_argument('--vis', action='store_true',
                   help='also write overlays (annotations | mask) to ignore_mask_<split>2017_vis '
                   'and show them when a display is available')
    p.add_argument('--overwrite', action='store_true', help='regenerate existing masks')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    show = args.vis and frame_loop.display_available('ignore mask')[0]
    for split in args.split or ['train', 'val']:
        written, skipped, unreadable = process_split(
            args.coco_dir, split, vis=args.vis, overwrite=args.overwrite, show=show,
            progress=not args.no_progress)
        print('%s2017: %d masks written, %d already done%s'
              % (split, written, skipped,
                 ', %d images could not be decoded for --vis' % unreadable if unreadable else ''))
    return 0


if __name__ == '__main__':
    cli.run_main(main)
