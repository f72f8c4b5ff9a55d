"""Does training learn?  Train a body-pose net from scratch on a handful of COCO images until it
finds the people in them: keypoint AP >= --target-ap on those same images.

    python bench/bench_overfit.py --gpu 0          # the real check, ~3 minutes on one GPU
    python bench/bench_overfit.py --quick          # CPU, tiny: the machinery runs end to end

The images are tests/data/coco_mini's (or --ann / --img-dir), each resized to --size x
--size (people stretched with it) so that the training input is the whole image, exactly what
inference then sees: no augmentation, no crop, and no ignore mask: a net that sees a few images
only learns nothing where the mask hides people annotated without keypoints, and fires there
at random (the maps are then trained everywhere; COCOeval ignores those people either way).
Targets and loss are the training script's (coco_data_loader, train_coco_pose_estimation);
batch norms use batch statistics, as training from scratch does.  Every --eval-every iterations the net
runs through PoseDetector (one scale: the image at its own size) and evaluate_coco's COCOeval
scores it against the equally resized annotations; the target maps themselves, scored the same
way first, give the ceiling (stride-8 maps of a small image cannot place joints finely enough
for COCO's keypoint similarity).  Stops at the target AP, at
--iterations, or when --time-limit seconds are spent; exit status 1 when the target was not
reached.  The last lines are the curve (iteration, loss, AP) and the final AP.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)
import cli  # noqa: E402
from entity import params  # noqa: E402

COCO_MINI = os.path.join(REPO, 'tests', 'data', 'coco_mini')


def resized_set(coco, img_dir, image_ids, size, out_dir):
    """Training examples of ``image_ids`` resized to size x size, and the COCO annotation
    file of the same resized images (written with the images into ``out_dir``).

    Returns (examples, annotation path): examples are (image, pafs, heatmaps, ignore) as
    CocoDataLoader gives them, nothing ignored.
    """
    import cv2
    import coco_data_loader as cdl
    import image_io
    data = {'images': [], 'annotations': [], 'categories': coco.dataset['categories']}
    examples = []
    for image_id in image_ids:
        info = coco.loadImgs(image_id)[0]
        img = image_io.read_image(os.path.join(img_dir, info['file_name']))
        h, w = img.shape[:2]
        sx, sy = size / w, size / h
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        poses = cdl.coco_to_poses([a for a in anns if cdl.is_training_person(a)])
        poses[..., 0] *= sx
        poses[..., 1] *= sy
        pafs, heatmaps = cdl.make_targets(poses, size)
        examples.append((img, pafs, heatmaps, np.zeros(heatmaps.shape[1:], bool)))
        name = '%012d.png' % image_id  # lossless: inference reads what training saw
        cv2.imwrite(os.path.join(out_dir, name), img)
        data['images'].append(dict(info, file_name=name, width=size, height=size))
        for a in anns:
            a = copy.deepcopy(a)
            a.pop('segmentation', None)
            k = np.asarray(a['keypoints'], np.float64).reshape(-1, 3)
            k[:, 0] *= sx
            k[:, 1] *= sy
            a['keypoints'] = k.reshape(-1).tolist()
            x, y, bw, bh = a['bbox']
            a['bbox'] = [x * sx, y * sy, bw * sx, bh * sy]
            a['area'] = a['area'] * sx * sy
            data['annotations'].append(a)
    ann_path = os.path.join(out_dir, 'annotations.json')
    with open(ann_path, 'w') as f:
        json.dump(data, f)
    return examples, ann_path


class TargetMaps(object):
    """Stands in for the net: each call returns the next example's target maps (the images
    are evaluated in the examples' order).  What the pipeline makes of perfect maps: the
    highest AP a net can reach at this size."""

    def __init__(self, examples):
        self.queue = list(examples)

    def __call__(self, x):
        import chainer
        _, pafs, heatmaps, _ = self.queue.pop(0)
        return [chainer.Variable(pafs[None])], [chainer.Variable(heatmaps[None])]


def overfit(args, out):
    """Train and evaluate; returns the curve [(iteration, loss, AP, seconds)]."""
    import chainer
    import evaluate_coco
    import train_coco_pose_estimation as tcpe
    from models import get_model_class
    from pose_detector import PoseDetector
    xp = cli.get_array_module(args.gpu)
    coco = evaluate_coco.load_coco(args.ann)
    ids = sorted(coco.getImgIds())[:args.images]
    examples, ann_path = resized_set(coco, args.img_dir, ids, args.size, out)
    eval_coco = evaluate_coco.load_coco(ann_path)
    batch = [xp.asarray(a) for a in chainer.dataset.concat_examples(examples)]
    arch = params['pose_archs'][args.arch]

    np.random.seed(args.seed)  # the same initial weights in every run
    model = get_model_class(args.arch)()
    if args.gpu >= 0:
        model.to_gpu(args.gpu)
    loss_chain = tcpe.make_loss_chain(model, arch['norm'])
    optimizer = chainer.optimizers.Adam(alpha=args.alpha)
    optimizer.setup(loss_chain)
    detector = PoseDetector(args.arch, model=model, device=args.gpu,
                            scales=[args.size / params['inference_img_size']])

    def ap(detector=detector):
        results, image_ids = evaluate_coco.detect_all(eval_coco, out, detector, progress=False)
        return float(evaluate_coco.coco_eval(eval_coco, results, image_ids, verbose=False)[0])

    print('%s from scratch on %d images at %dx%d (%d people with keypoints), batch %d, Adam '
          'alpha %g, %s' % (args.arch, len(ids), args.size, args.size,
                            sum(1 for a in eval_coco.dataset['annotations']
                                if a.get('num_keypoints', 0) > 0), len(ids), args.alpha,
                            'GPU %d' % args.gpu if args.gpu >= 0 else 'CPU'))
    print('the target maps themselves score AP %.3f (the ceiling at this size)'
          % ap(PoseDetector(args.arch, model=TargetMaps(examples), scales=detector.scales)))
    print('%9s %9s %7s %8s' % ('iteration', 'loss', 'AP', 'seconds'))
    curve = []
    start = time.perf_counter()
    for it in range(args.iterations + 1):
        with chainer.using_config('train', True):
            loss = loss_chain(*batch)  # of the weights after `it` updates
        if it % args.eval_every == 0 or it == args.iterations:
            curve.append((it, float(loss.array), ap(), time.perf_counter() - start))
            print('%9d %9.5f %7.3f %8.1f' % curve[-1], flush=True)
            if curve[-1][2] >= args.target_ap or it == args.iterations or (
                    time.perf_counter() - start > args.time_limit):
                break
        loss_chain.cleargrads()
        loss.backward()
        optimizer.update()
    return curve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cli.add_device_arguments(p, backend=False)  # training: Chainer only, as in train_coco
    p.add_argument('--quick', action='store_true',
                   help='CPU-sized: 2 images at 64x64, 6 iterations (checks the machinery, '
                   'does not reach the target)')
    p.add_argument('--arch', default='mobilenet', choices=sorted(params['pose_archs']))
    p.add_argument('--ann', default=os.path.join(COCO_MINI, 'test_coco.json'))
    p.add_argument('--img-dir', default=COCO_MINI)
    p.add_argument('--images', type=int, help='how many images (the first by id; default 4)')
    p.add_argument('--size', type=int, help='image side in pixels, a multiple of 16 '
                   '(default 368; the stride-8 maps limit the AP a small size can reach, '
                   'printed first)')
    p.add_argument('--iterations', type=int, help='at most this many (default 3000)')
    p.add_argument('--eval-every', type=int, help='iterations between AP evaluations '
                   '(default 50)')
    p.add_argument('--alpha', type=float, default=1e-3, help='Adam alpha')
    p.add_argument('--target-ap', type=float, default=0.5)
    p.add_argument('--time-limit', type=float, default=170.0,
                   help='stop evaluating further after this many seconds')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    quick = {'images': 2, 'size': 64, 'iterations': 6, 'eval_every': 3}
    full = {'images': 4, 'size': 368, 'iterations': 3000, 'eval_every': 50}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size <= 0 or args.size % 16:
        p.error('--size must be a positive multiple of 16')
    for key in ('images', 'iterations', 'eval_every'):
        if getattr(args, key) <= 0:
            p.error('--%s must be positive' % key.replace('_', '-'))

    with tempfile.TemporaryDirectory() as out:
        curve = overfit(args, out)
    print('curve: ' + '  '.join('%d: loss %.4f AP %.3f' % c[:3] for c in curve))
    final = curve[-1]
    reached = final[2] >= args.target_ap
    print('final AP %.3f after %d iterations (%.0f s): target %.2f %s'
          % (final[2], final[0], final[3], args.target_ap,
             'reached' if reached else 'not reached'))
    return 0 if reached else 1


if __name__ == '__main__':
    cli.run_main(main)
