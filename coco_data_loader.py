"""COCO 2017 person keypoints as a Chainer dataset of training targets.

Each example is ``(image, pafs, heatmaps, ignore_mask)``:

* ``image``: uint8 BGR, ``insize`` x ``insize`` x 3, an augmented crop around a person;
* ``pafs``: float32, (2 * len(limbs_point), insize / stride, insize / stride), unit vectors
  along every labelled limb (``paf_sigma`` input pixels either side of it), averaged where
  several people overlap;
* ``heatmaps``: float32, (18 + 1, h, w), a Gaussian (``heatmap_sigma`` input pixels) at every
  labelled joint (maximum over people) plus the background channel 1 - max(joints);
* ``ignore_mask``: bool, (h, w), True where the loss must not look (crowds and people
  annotated with too few keypoints, see gen_ignore_mask.py).

Target maps are built directly on the network's output grid: output cell (i, j) is centred
on input pixel (stride * j + (stride - 1) / 2, stride * i + (stride - 1) / 2), the same
convention as CMU's data transformer and as inference's upsampling.

Augmentation follows the original: a random scale chosen from the people's sizes, a random
rotation (Gaussian, clipped to +-max_rotate_degree), an insize crop centred on a random person
with a random centre perturbation, colour jitter and a horizontal flip that swaps left and right
joints.  Scale, rotation, crop and flip are composed into one affine transform applied once to
the image, the mask and the keypoints (one interpolation instead of three).

Images that fail to decode are skipped (another image is drawn) and counted; the count is
shared between loader processes (``skipped_images``).

Run as a script it writes the augmented crops with their PAFs, heatmaps and ignore masks
overlaid, for a visual check of the generator.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import json
import multiprocessing
import os
import sys

import cv2
import numpy as np
from chainer.dataset import DatasetMixin

import cli
import frame_loop
from entity import JointType, params

N_JOINTS = len(JointType)
N_LIMBS = len(params['limbs_point'])
_LIMBS = np.array(params['limbs_point'], dtype=np.int64)
_FLIP_PERM = np.arange(N_JOINTS)
for _a, _b in params['flip_joint_pairs']:
    _FLIP_PERM[_a], _FLIP_PERM[_b] = _b, _a


# ----------------------------------------------------------------------------- COCO files

def split_paths(coco_dir, split):
    """(annotation json, image dir, ignore-mask dir) of ``split`` ('train' or 'val')."""
    return (os.path.join(coco_dir, 'annotations', 'person_keypoints_%s2017.json' % split),
            os.path.join(coco_dir, '%s2017' % split),
            os.path.join(coco_dir, 'ignore_mask_%s2017' % split))


def load_coco(coco_dir, split):
    """pycocotools ``COCO`` of ``split``; missing or corrupt files are ``UserError``."""
    from pycocotools.coco import COCO
    ann_path, _, _ = split_paths(coco_dir, split)
    if not os.path.isdir(coco_dir):
        raise cli.UserError('COCO directory %s does not exist: download COCO 2017 with '
                            '`bash getData.sh %s` (or pass --coco-dir)' % (coco_dir, coco_dir))
    if not os.path.isfile(ann_path):
        raise cli.UserError('%s is missing: download the annotations with `bash getData.sh %s`'
                            % (ann_path, coco_dir))
    try:
        with open(ann_path) as f:
            dataset = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise cli.UserError('%s: corrupt annotation JSON (%s); delete it and rerun getData.sh'
                            % (ann_path, str(e).splitlines()[0]))
    except OSError as e:
        raise cli.UserError('%s: cannot read (%s)' % (ann_path, e.strerror or e))
    if not isinstance(dataset, dict) or not all(
            isinstance(dataset.get(k), list) for k in ('images', 'annotations', 'categories')):
        raise cli.UserError('%s: not a COCO annotation file (needs images, annotations and '
                            'categories lists)' % ann_path)
    coco = COCO()
    coco.dataset = dataset
    try:
        # createIndex prints progress lines; keep stdout for the user's own output
        with open(os.devnull, 'w') as devnull:
            saved, sys.stdout = sys.stdout, devnull
            try:
                coco.createIndex()
            finally:
                sys.stdout = saved
    except (KeyError, TypeError) as e:
        raise cli.UserError('%s: malformed COCO annotation (%s missing or of the wrong type)'
                            % (ann_path, e))
    return coco


def person_category_ids(coco):
    ids = coco.getCatIds(catNms=['person'])
    if not ids:
        raise cli.UserError('annotation file has no "person" category')
    return ids


def is_training_person(ann):
    """A person the network is trained on (enough keypoints, big enough); others are ignored."""
    return (not ann.get('iscrowd', 0) and ann.get('num_keypoints', 0) >= params['min_keypoints']
            and ann.get('area', 0) > params['min_area'])


def coco_to_poses(anns):
    """(N, 18, 3) float32 [x, y, v] in our joint order from COCO annotations.

    v is COCO's flag (0 unlabelled, 1 labelled but occluded, 2 visible).  The neck is the
    shoulders' midpoint, labelled when both shoulders are.
    """
    poses = np.zeros((len(anns), N_JOINTS, 3), np.float32)
    if not anns:
        return poses
    for a in anns:
        k = a.get('keypoints')
        if not isinstance(k, list) or len(k) != 51:
            raise cli.UserError('annotation %s: "keypoints" must be 17 x 3 numbers, got %s'
                                % (a.get('id'), 'length %d' % len(k) if isinstance(k, list)
                                   else type(k).__name__))
    try:
        kps = np.array([a['keypoints'] for a in anns], np.float32).reshape(len(anns), 17, 3)
    except (TypeError, ValueError):
        raise cli.UserError('annotation %s: "keypoints" are not numbers'
                            % ', '.join(str(a.get('id')) for a in anns))
    poses[:, params['coco_joint_indices']] = kps
    ls, rs = poses[:, JointType.LShoulder], poses[:, JointType.RShoulder]
    both = (ls[:, 2] > 0) & (rs[:, 2] > 0)
    poses[both, JointType.Neck, :2] = (ls[both, :2] + rs[both, :2]) / 2
    poses[both, JointType.Neck, 2] = np.minimum(ls[both, 2], rs[both, 2])
    return poses


# ----------------------------------------------------------------------------- augmentation

def pose_bboxes(poses):
    """(N, 4) [x1, y1, x2, y2] of each pose's labelled joints."""
    boxes = np.zeros((len(poses), 4), np.float32)
    for k, pose in enumerate(poses):
        pts = pose[pose[:, 2] > 0, :2]
        boxes[k, :2], boxes[k, 2:] = pts.min(axis=0), pts.max(axis=0)
    return boxes


def random_affine(rng, poses, insize, augment=True, flip=None):
    """2x3 affine from the original image to the ``insize`` crop, and whether it flips.

    Scale: uniform in [min_scale, max_scale] where the bounds bring the smallest person's box
    diagonal to at least ``min_box_size`` and the largest to at most ``max_box_size`` (clamped
    to params' min_scale..1 and 1..max_scale).  Rotation: N(0, (max_rotate_degree / 3)^2)
    degrees clipped to +-max_rotate_degree.  Crop: centred on a random person's box centre,
    shifted by up to +-center_perterb_max pixels.  Flip with probability 1/2.
    Without ``augment``: scale 1, no rotation, no shift, no flip, first person.
    ``flip`` True/False overrides the random flip (the random draws stay the same).
    """
    boxes = pose_bboxes(poses)
    diag = np.sqrt(((boxes[:, 2:] - boxes[:, :2] + 1) ** 2).sum(axis=1))
    if augment:
        lo = min(max(params['min_box_size'] / diag.min(), params['min_scale']), 1.0)
        hi = min(max(params['max_box_size'] / diag.max(), 1.0), params['max_scale'])
        scale = lo + (hi - lo) * rng.random_sample()
        max_deg = params['max_rotate_degree']
        degree = float(np.clip(rng.randn() * max_deg / 3, -max_deg, max_deg))
        person = rng.randint(len(poses))
        shift = (rng.random_sample(2) - 0.5) * 2 * params['center_perterb_max']
        coin = bool(rng.randint(2))
        flip = coin if flip is None else flip
    else:
        scale, degree, person, shift, flip = 1.0, 0.0, 0, np.zeros(2), bool(flip)
    center = (boxes[person, :2] + boxes[person, 2:]) / 2
    # cv2's convention: positive angle = counter-clockwise in the image (y down)
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), degree, scale)
    m[:, 2] += (insize - 1) / 2.0 + shift - center
    if flip:
        m[0] = -m[0]
        m[0, 2] += insize - 1
    return m, flip


def transform_poses(poses, m, flip):
    """Apply the affine ``m`` to the joints; a flip also swaps left and right joints."""
    out = poses.copy()
    out[..., :2] = poses[..., :2] @ m[:, :2].T + m[:, 2]
    if flip:
        out = out[:, _FLIP_PERM]
    return out


def distort_color(img, rng):
    """Random hue (+-10 of 180, wrapped), saturation (+-40) and value (+-30) shifts."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + rng.randint(-10, 11)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.randint(-40, 41), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + rng.randint(-30, 31), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def augment(img, mask, poses, insize, rng, augment=True, pad_value=128, flip=None,
            jitter_color=True):
    """Warp image, ignore mask and poses into one ``insize`` crop (see ``random_affine``).

    Returns (image uint8, mask bool at insize, poses, affine, flipped).  Pixels from outside
    the photo are ``pad_value`` grey and not ignored (trained as background, as the original).
    """
    m, flip = random_affine(rng, poses, insize, augment, flip)
    out = cv2.warpAffine(img, m, (insize, insize), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3)
    out_mask = cv2.warpAffine(mask.astype(np.uint8) * 255, m, (insize, insize),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0) > 0
    if augment and rng.randint(2) and jitter_color:
        out = distort_color(out, rng)
    return out, out_mask, transform_poses(poses, m, flip), m, flip


# ----------------------------------------------------------------------------- targets

def grid_centres(n, stride):
    """Input-pixel coordinates of the centres of ``n`` output cells."""
    return np.arange(n, dtype=np.float32) * stride + (stride - 1) / 2.0


def generate_heatmaps(poses, out_size, stride, sigma):
    """(19, h, w) float32: per joint the max over people of a Gaussian, then background."""
    h, w = out_size
    gx, gy = grid_centres(w, stride), grid_centres(h, stride)
    maps = np.zeros((N_JOINTS + 1, h, w), np.float32)
    if len(poses):
        # separable Gaussian: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2)
        ex = np.exp(-(gx[None, None] - poses[..., 0:1]) ** 2 / (2 * sigma ** 2))  # N,J,w
        ey = np.exp(-(gy[None, None] - poses[..., 1:2]) ** 2 / (2 * sigma ** 2))  # N,J,h
        g = ey[..., :, None] * ex[..., None, :]                                     # N,J,h,w
        g *= (poses[..., 2] > 0)[..., None, None]
        maps[:N_JOINTS] = g.max(axis=0)
    maps[N_JOINTS] = 1.0 - maps[:N_JOINTS].max(axis=0)
    return maps


def generate_pafs(poses, out_size, stride, half_width):
    """(2 * n_limbs, h, w) float32 part affinity fields.

    A cell belongs to a person's limb a -> b when its centre projects onto the segment and
    lies within ``half_width`` input pixels of it; it then holds the unit vector (b - a) / |b - a|,
    averaged over the people whose limb covers it.
    """
    h, w = out_size
    gx, gy = grid_centres(w, stride), grid_centres(h, stride)
    pafs = np.zeros((2 * N_LIMBS, h, w), np.float32)
    if not len(poses):
        return pafs
    a, b = poses[:, _LIMBS[:, 0]], poses[:, _LIMBS[:, 1]]          # N,L,3
    vec = b[..., :2] - a[..., :2]
    length = np.sqrt((vec ** 2).sum(-1))                            # N,L
    ok = (a[..., 2] > 0) & (b[..., 2] > 0) & (length > 1e-3)
    u = vec / np.maximum(length, 1e-3)[..., None]
    dx = gx[None, None, None, :] - a[..., 0, None, None]            # N,L,1,w
    dy = gy[None, None, :, None] - a[..., 1, None, None]            # N,L,h,1
    along = u[..., 0, None, None] * dx + u[..., 1, None, None] * dy
    across = np.abs(u[..., 0, None, None] * dy - u[..., 1, None, None] * dx)
    on = ((along >= 0) & (along <= length[..., None, None]) & (across <= half_width)
          & ok[..., None, None]).astype(np.float32)               # N,L,h,w
    count = on.sum(axis=0)
    scale = 1.0 / np.maximum(count, 1)
    pafs[0::2] = (on * u[..., 0, None, None]).sum(axis=0) * scale
    pafs[1::2] = (on * u[..., 1, None, None]).sum(axis=0) * scale
    return pafs


def downsample_mask(mask, stride, dilate):
    """Ignore mask on the output grid: dilate by ``dilate`` pixels, then any pixel per cell."""
    if dilate > 0:
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((dilate, dilate), np.uint8)) > 0
    h, w = mask.shape[0] // stride, mask.shape[1] // stride
    return mask[:h * stride, :w * stride].reshape(h, stride, w, stride).any(axis=(1, 3))


def make_targets(poses, insize, stride=None):
    stride = stride or params['downscale']
    out = (insize // stride, insize // stride)
    return (generate_pafs(poses, out, stride, params['paf_sigma']),
            generate_heatmaps(poses, out, stride, params['heatmap_sigma']))


# ----------------------------------------------------------------------------- dataset

class CocoDataLoader(DatasetMixin):
    """Augmented training examples from one COCO 2017 split.

    Only images with at least one training person (``is_training_person``) are used.
    ``deterministic``: example ``i`` always gets the same augmentation (validation).
    ``n_samples``: keep that many images, evenly spaced over the sorted ids.
    """

    def __init__(self, coco_dir=None, split='train', insize=None, augment=True,
                 deterministic=False, n_samples=None, seed=0, pad_value=128, coco=None):
        coco_dir = params['coco_dir'] if coco_dir is None else coco_dir
        self.insize = insize or params['insize']
        self.stride = params['downscale']
        if self.insize % self.stride:
            raise cli.UserError('--insize %d is not a multiple of the stride %d'
                                % (self.insize, self.stride))
        self.split, self.augment, self.deterministic = split, augment, deterministic
        self.seed, self.pad_value = seed, pad_value
        self.coco = coco if coco is not None else load_coco(coco_dir, split)
        _, self.img_dir, self.mask_dir = split_paths(coco_dir, split)
        if not os.path.isdir(self.img_dir):
            raise cli.UserError('image directory %s does not exist: download it with '
                                '`bash getData.sh %s`' % (self.img_dir, coco_dir))
        if not os.path.isdir(self.mask_dir):
            raise cli.UserError('ignore masks %s do not exist: run `python gen_ignore_mask.py '
                                '--split %s --coco-dir %s` first'
                                % (self.mask_dir, split, coco_dir))
        cat_ids = person_category_ids(self.coco)
        self.entries = []  # (file name, mask name, poses)
        for img_id in sorted(self.coco.getImgIds(catIds=cat_ids)):
            anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id], catIds=cat_ids,
                                                          iscrowd=None))
            people = [a for a in anns if is_training_person(a)]
            poses = coco_to_poses(people)
            poses = poses[(poses[..., 2] > 0).any(axis=1)]  # num_keypoints said so, but check
            if len(poses):
                self.entries.append((self.coco.imgs[img_id]['file_name'],
                                     '%012d.png' % img_id, poses))
        if not self.entries:
            raise cli.UserError('%s: no image has a person with >= %d keypoints'
                                % (split_paths(coco_dir, split)[0], params['min_keypoints']))
        have = set(os.listdir(self.mask_dir))
        missing = sum(1 for e in self.entries if e[1] not in have)
        if missing:
            raise cli.UserError('%d of %d %s2017 images have no ignore mask in %s: run '
                                '`python gen_ignore_mask.py --split %s --coco-dir %s`'
                                % (missing, len(self.entries), split, self.mask_dir, split,
                                   coco_dir))
        if n_samples is not None and n_samples < len(self.entries):
            keep = np.linspace(0, len(self.entries) - 1, n_samples).round().astype(int)
            self.entries = [self.entries[k] for k in keep]
        # shared between MultiprocessIterator workers (inherited at fork/spawn)
        self._skipped = multiprocessing.Value('l', 0)
        self._warned = set()
        self._rng, self._rng_pid = None, None
        self.coco = None  # the index is not needed any more (and loader processes copy it)

    def __len__(self):
        return len(self.entries)

    @property
    def skipped_images(self):
        """How many undecodable images were skipped so far (all loader processes)."""
        return self._skipped.value

    def _process_rng(self):
        # each loader process needs its own stream: forked workers share the parent's state
        if self._rng_pid != os.getpid():
            self._rng = np.random.RandomState()
            self._rng_pid = os.getpid()
        return self._rng

    def read(self, i):
        """(image, ignore mask at image size, poses) of entry ``i``; image None if unreadable."""
        name, mask_name, poses = self.entries[i]
        img = cv2.imread(os.path.join(self.img_dir, name), cv2.IMREAD_COLOR)
        mask = cv2.imread(os.path.join(self.mask_dir, mask_name), cv2.IMREAD_GRAYSCALE)
        if img is None or mask is None or mask.shape != img.shape[:2]:
            if img is None:
                bad, why = os.path.join(self.img_dir, name), 'cannot decode it'
            elif mask is None:
                bad, why = os.path.join(self.mask_dir, mask_name), 'cannot decode it'
            else:
                bad, why = os.path.join(self.mask_dir, mask_name), (
                    'mask is %dx%d, image %dx%d (rerun gen_ignore_mask.py --overwrite)'
                    % (mask.shape[1], mask.shape[0], img.shape[1], img.shape[0]))
            with self._skipped.get_lock():
                self._skipped.value += 1
            if bad not in self._warned:
                self._warned.add(bad)
                print('warning: skipping %s: %s' % (bad, why), file=sys.stderr)
            return None, None, poses
        return img, mask > 127, poses.copy()

    def example(self, i, rng):
        """Like ``get_example`` with an explicit RNG; also returns the augmented poses."""
        img, mask, poses = self.read(i)
        tries = 0
        while img is None:
            tries += 1
            if tries > 100:
                raise cli.UserError('%s: more than 100 images in a row could not be decoded'
                                    % self.img_dir)
            if len(self) > 1:  # another image than the one that failed
                i = (i + 1 + rng.randint(len(self) - 1)) % len(self)
            img, mask, poses = self.read(i)
        img, mask, poses, _, _ = augment(img, mask, poses, self.insize, rng, self.augment,
                                         self.pad_value)
        pafs, heatmaps = make_targets(poses, self.insize, self.stride)
        ignore = downsample_mask(mask, self.stride, params['ignore_mask_dilate'])
        return (img, pafs, heatmaps, ignore), poses

    def get_example(self, i):
        if self.deterministic:
            rng = np.random.RandomState((self.seed * 1000003 + i) % (2 ** 32))
        else:
            rng = self._process_rng()
        return self.example(i, rng)[0]


# ----------------------------------------------------------------------------- overlays

def overlay_pafs(img, pafs):
    """Colour-code the PAFs (hue = direction, brightness = magnitude) over ``img``."""
    vx, vy = pafs[0::2].sum(axis=0), pafs[1::2].sum(axis=0)
    mag = np.minimum(np.sqrt(vx ** 2 + vy ** 2), 1.0)
    hue = (np.arctan2(vy, vx) / (2 * np.pi) % 1.0) * 179
    hsv = np.stack([hue, mag * 255, mag * 255], axis=-1).astype(np.uint8)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    bgr = cv2.resize(bgr, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.addWeighted(img, 0.6, bgr, 0.4, 0)


def overlay_heatmaps(img, heatmaps):
    joints = heatmaps[:-1].max(axis=0)
    up = cv2.resize(joints, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(up, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 0.6, colour, 0.4, 0)


def overlay_mask(img, mask):
    up = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]),
                    interpolation=cv2.INTER_NEAREST) > 0
    out = img.copy()
    out[up] = (out[up] * 0.3).astype(np.uint8)
    return out


def visualize(example):
    img, pafs, heatmaps, mask = example
    return np.hstack([img, overlay_pafs(img, pafs), overlay_mask(overlay_heatmaps(img, heatmaps),
                                                                 mask)])


def main(argv=None):
    p = argparse.ArgumentParser(description='Write augmented training crops with their PAFs, '
                                'heatmaps and ignore masks overlaid (left to right: crop, PAFs, '
                                'heatmaps + darkened ignore mask) for a visual check.')
    p.add_argument('--split', choices=['train', 'val'], default='train')
    p.add_argument('--coco-dir', default=params['coco_dir'])
    p.add_argument('--insize', type=int, default=params['insize'])
    p.add_argument('-n', '--num', type=int, default=20, help='how many examples')
    p.add_argument('--out', default='data_loader_check', help='directory for the PNGs')
    p.add_argument('--show', action='store_true', help='also show them (needs a display)')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    cli.ensure_output_dir(args.out, '--out')
    data = CocoDataLoader(args.coco_dir, args.split, args.insize, deterministic=True,
                          seed=args.seed)
    show = args.show and frame_loop.display_available('check')[0]
    if args.show and not show:
        print('no display available: writing files only', file=sys.stderr)
    for i in range(min(args.num, len(data))):
        vis = visualize(data.get_example(i))
        path = os.path.join(args.out, '%s_%04d.png' % (args.split, i))
        with cli.atomic_output(path) as tmp:
            if not cv2.imwrite(tmp, vis):
                raise cli.UserError('%s: cannot write' % path)
        if show:
            cv2.imshow('check', vis)
            if cv2.waitKey(0) & 0xFF == ord('q'):
                break
    print('wrote %d images to %s (skipped undecodable images: %d)'
          % (min(args.num, len(data)), args.out, data.skipped_images))


if __name__ == '__main__':
    cli.run_main(main)
