"""COCO keypoint evaluation of the body-pose pipeline (pycocotools' COCOeval).

    python evaluate_coco.py --ann person_keypoints_val2017.json --img-dir val2017 \\
        [ARCH WEIGHTS] [--scales 0.5 1 1.5 2] [--out results.json] [--gpu 0]

Runs ``PoseDetector`` over every image of the annotation file (tqdm bar), converts each
person to COCO's 17 keypoints (``entity.params['coco_joint_indices']``), writes the results
in COCO's result format (``--out``) and prints COCOeval's keypoint table.  ``evaluate()``
returns the ten COCOeval statistics (AP, AP50, AP75, APm, APl, AR, ...).  Images that
cannot be read are skipped with a warning, counted, and left out of the evaluation; an
annotation file without images is an error.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import contextlib
import io
import os

import numpy as np

import cli
from entity import params
from pose_detector import add_flip_argument

PERSON_CATEGORY = 1


def poses_to_coco(poses, scores, image_id):
    """(N, 18, 3) poses -> COCO keypoint results (17 x, y, v; v = 1 if found, else 0, 0, 0)."""
    idx = np.asarray(params['coco_joint_indices'], np.intp)
    results = []
    for pose, score in zip(np.asarray(poses, np.float64), np.asarray(scores, np.float64)):
        kp = pose[idx]
        found = kp[:, 2] > 0
        if not found.any():
            continue
        triples = np.zeros((len(idx), 3))
        triples[found, :2] = kp[found, :2]
        triples[found, 2] = 1
        results.append({'image_id': int(image_id), 'category_id': PERSON_CATEGORY,
                        'keypoints': [round(float(v), 2) for v in triples.reshape(-1)],
                        'score': float(score)})
    return results


def person_score(poses, scores):
    """The ranking score COCOeval sees: the grouping's person score (``person_score``,
    paf_grouping.person_scores: by default the mean peak score over COCO's 17 keypoints, missing
    ones 0, times the mean limb score)."""
    return scores


def settings_line(detector):
    """One line naming the accuracy settings the table is for (``entity.params``)."""
    radius = params['peak_nms_radius']
    return ('settings: %s, scales %s, flip %s; peaks > %g, %s sub-pixel, merged within %s; '
            'limbs: %d of %d samples > %g; person score %s; OKS NMS %s'
            % (detector.arch, ' '.join('%g' % s for s in detector.scales),
               'on' if detector.flip else 'off', params['heatmap_peak_thresh'],
               params['peak_subpixel'] or 'no', '%g px' % radius if radius else 'no radius',
               params['n_integ_points_thresh'], params['n_integ_points'],
               params['inner_product_thresh'], params['person_score'],
               params['oks_nms_thresh'] if params['oks_nms_thresh'] is not None else 'off'))


def load_coco(ann_file):
    from pycocotools.coco import COCO
    if not os.path.isfile(ann_file):
        raise cli.UserError('%s: no such annotation file' % ann_file)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(ann_file)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise cli.UserError('%s: not a COCO annotation file (%s)' % (ann_file, e))
    if 'images' not in coco.dataset or 'annotations' not in coco.dataset:
        raise cli.UserError('%s: not a COCO annotation file (no images/annotations)' % ann_file)
    return coco


def read_coco_image(path, info):
    """The image in the frame of its annotation: turned by its EXIF orientation (as
    ``read_image`` does) unless the annotation's width and height are those of the pixels
    as stored."""
    import image_io
    img = image_io.read_image(path)
    w, h = info.get('width'), info.get('height')
    if (h, w) != img.shape[:2] and (w, h) == img.shape[:2]:
        img = image_io.read_image(path, exif=False)
    return img


def detect_all(coco, img_dir, detector, image_ids=None, progress=True):
    """COCO keypoint results for every image (or ``image_ids``) of ``coco``, and the ids
    of the images read.  An image that cannot be read is skipped with a warning (the others'
    results are kept); none readable is a ``cli.UserError`` naming the first."""
    from tqdm import tqdm
    ids = sorted(coco.getImgIds()) if image_ids is None else list(image_ids)
    results, done, failed = [], [], []
    for image_id in tqdm(ids, desc='images', unit='img', disable=not progress):
        info = coco.loadImgs(image_id)[0]
        try:
            img = read_coco_image(os.path.join(img_dir, info['file_name']), info)
        except cli.UserError as e:
            cli.warn('%s: skipped' % e)
            failed.append(str(e))
            continue
        poses, scores = detector(img)
        results += poses_to_coco(poses, person_score(poses, scores), image_id)
        done.append(image_id)
    if not done:
        raise cli.UserError('no image could be read (%d tried; first: %s)'
                            % (len(ids), failed[0]))
    if failed:
        cli.warn('%d of %d images could not be read and are left out of the evaluation'
                 % (len(failed), len(ids)))
    return results, done


def coco_eval(coco, results, image_ids, verbose=True):
    """COCOeval keypoint statistics (10 numbers) of ``results``; prints the table if verbose."""
    from pycocotools.cocoeval import COCOeval
    if not results:
        if verbose:
            print('no people detected: every statistic is 0')
        return np.zeros(10)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dets = coco.loadRes(results)
        ev = COCOeval(coco, dets, 'keypoints')
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def evaluate(ann_file, img_dir, arch=None, weights=None, scales=None, out=None, device=-1,
             detector=None, image_ids=None, verbose=True, backend='chainer', flip=None):
    """Detect people in every image of ``ann_file`` and score them with COCOeval (``flip``:
    see PoseDetector).

    Returns COCOeval's ten keypoint statistics (stats[0] = AP at OKS .50:.95).
    """
    from pose_detector import check_scales
    check_scales(scales)
    if out:
        cli.check_outputs([('--out', out)], [('--ann', ann_file), ('WEIGHTS', weights)])
    coco = load_coco(ann_file)
    if not os.path.isdir(img_dir):
        raise cli.UserError('%s: no such image directory' % img_dir)
    if not (coco.getImgIds() if image_ids is None else list(image_ids)):
        raise cli.UserError('%s: no images to evaluate (the annotation file lists none)'
                            % ann_file)
    if detector is None:
        from pose_detector import PoseDetector
        detector = PoseDetector(arch, weights, device=device, scales=scales, backend=backend,
                                flip=flip)
    results, ids = detect_all(coco, img_dir, detector, image_ids, progress=verbose)
    if out:
        cli.write_json_atomic(out, results)
    if verbose and hasattr(detector, 'scales'):
        print(settings_line(detector))
    return coco_eval(coco, results, ids, verbose=verbose)


def main(argv=None):
    p = argparse.ArgumentParser(description='COCO keypoint AP of the pose detector')
    p.add_argument('arch', nargs='?', choices=sorted(params['pose_archs']),
                   help='model architecture (default: %s)' % params['default_pose_arch'])
    p.add_argument('weights', nargs='?', help="weights file (default: the arch's own)")
    p.add_argument('--ann', required=True, help='COCO person_keypoints json')
    p.add_argument('--img-dir', required=True, help='directory of its images')
    p.add_argument('--scales', type=float, nargs='+', metavar='S',
                   help='inference scales (default: %s)'
                        % ' '.join('%g' % s for s in params['inference_scales']))
    p.add_argument('--out', '-o', help='write the COCO results json here')
    cli.add_device_arguments(p)
    add_flip_argument(p)
    args = p.parse_args(argv)
    stats = evaluate(args.ann, args.img_dir, args.arch, args.weights, args.scales, args.out,
                     args.gpu, backend=args.backend, flip=args.flip)
    print('keypoint AP %.3f' % stats[0])
    if args.out:
        print('results written to %s' % args.out)
    return 0


if __name__ == '__main__':
    cli.run_main(main)
