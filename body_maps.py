"""Multi-scale evaluation of a body net: the image resized and padded for each scale, the
net's PAFs and heatmaps upsampled back and averaged (``compute_maps``), optionally with the
mirrored image (``flip``); the maps' coordinates mapped back to the image."""
import cv2
import numpy as np

import cli
from entity import JointType, params
from lazy_maps import LazyMaps, upsample_maps

N_JOINTS = len(JointType)


def fit_size(h, w, shorter, max_aspect=None):
    """(new_h, new_w) with the shorter side ``shorter``, keeping the aspect ratio, the longer
    side capped at ``max_aspect * shorter``; both at least 1."""
    if max_aspect is None:
        max_aspect = params['inference_max_aspect']
    f = min(shorter / min(h, w), max_aspect * shorter / max(h, w))
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def resize(img, size_hw):
    """cv2.resize to (h, w): area averaging when shrinking (no aliasing), cubic when enlarging."""
    h, w = size_hw
    if (h, w) == img.shape[:2]:
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def pad_to_multiple(img, multiple, value):
    """Pad the bottom and right of an HxWxC image so H and W are multiples of ``multiple``.

    Returns (padded, (pad_bottom, pad_right)).
    """
    h, w = img.shape[:2]
    pb, pr = -h % multiple, -w % multiple
    if pb or pr:
        img = cv2.copyMakeBorder(img, 0, pb, 0, pr, cv2.BORDER_CONSTANT,
                                 value=(value,) * min(4, img.shape[2]))
    return img, (pb, pr)


def preprocess(img, arch):
    """BGR uint8 HxWx3 -> float32 1x3xHxW normalised as the body net ``arch`` expects."""
    return to_net_input(img, params['pose_archs'][arch]['norm'])


def to_net_input(img, norm):
    """BGR uint8 HxWx3 -> float32 1x3xHxW, or a training batch NxHxWx3 (NumPy or CuPy) ->
    Nx3xHxW: ``'raw'`` 0..255 values, or ``'caffe'`` (the CMU nets') x / 256 - 0.5."""
    if norm not in ('caffe', 'raw'):
        raise ValueError('unknown normalisation %r' % (norm,))
    if img.ndim == 4 and img.shape[3] == 3:  # a batch, on the training device
        x = img.astype(np.float32).transpose(0, 3, 1, 2)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError('expected a BGR image of shape (H, W, 3), got %s' % (img.shape,))
    else:
        # cv2.split de-interleaves the channels, then each plane is cast into place: much
        # faster than NumPy's cast + transposing copy (bench/RESULTS.md).
        x = np.empty((1, 3) + img.shape[:2], np.float32)
        for c, plane in enumerate(cv2.split(np.ascontiguousarray(img))):
            x[0, c] = plane
    if norm == 'caffe':
        x /= 256.0
        x -= 0.5
    return x


def work_size(h, w, scales):
    """The resolution the maps are averaged and grouped at: the image's own, unless the
    image is larger than the largest net input (then that, since the net saw no more detail).
    Bounds memory for huge images; coordinates are mapped back afterwards."""
    cap = params['inference_img_size'] * max(scales)
    f = min(1.0, cap / min(h, w), params['inference_max_aspect'] * cap / max(h, w))
    if f >= 1.0:
        return h, w
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def compute_maps(img, forward, arch, scales=None, smooth=True, lazy=False, flip=None):
    """Evaluate a body net on ``img`` at several scales; average the upsampled maps.

    ``forward(x)`` takes the preprocessed float32 1x3xHxW input and returns
    ``(pafs, heatmaps)`` as NumPy arrays of shape (38, H/stride, W/stride) and
    (19, H/stride, W/stride) (a leading batch axis of 1 is allowed).

    For each scale the image is resized so its shorter side is ``inference_img_size * scale``,
    padded bottom/right to the arch's ``pad_multiple`` with its ``pad_value``, run through the
    net; the maps are upsampled by the stride (cubic), the padding cropped, and resized (cubic)
    to the working resolution (see ``work_size``), then summed scale by scale.  With ``smooth``
    the heatmaps come out Gaussian-smoothed (``gaussian_sigma``, ``ksize``; the smoothing is
    folded into the upsampling, see ``upsample_maps``): pass them to ``group_people`` with
    ``smooth=False``.

    With ``lazy`` both come back as ``LazyMaps``: ``group_people`` computes the heatmaps only
    in the rows that can hold peaks and samples the PAFs only where limbs are scored (same
    values, much less work).

    With ``flip`` (default ``flip_test``) each padded input is also run mirrored and the
    maps are un-mirrored (``unmirror_maps``) and averaged with the direct ones at the net's
    resolution: twice the forwards, the same post-processing.

    Returns (heatmaps (19, h, w), pafs (38, h, w), (sy, sx)): float32 maps at the working
    resolution and its scale to the image (``to_image_coords`` maps poses back).
    """
    if scales is None:
        scales = params['inference_scales']
    if flip is None:
        flip = params['flip_test']
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise cli.UserError('scales must be positive numbers, got %s' % scales)
    ap = params['pose_archs'][arch]
    h, w = img.shape[:2]
    wh, ww = work_size(h, w, scales)
    heat_acc, paf_acc = (LazyMaps((wh, ww)), LazyMaps((wh, ww))) if lazy else (None, None)
    for scale in scales:
        rh, rw = fit_size(h, w, params['inference_img_size'] * scale)
        padded, _ = pad_to_multiple(resize(img, (rh, rw)), ap['pad_multiple'], ap['pad_value'])
        x = preprocess(padded, arch)
        pafs, heatmaps = _net_maps(forward, x)
        if flip:
            # Mirroring the padded input (padding then on the left) keeps the output grid:
            # its pixel j is the direct output's pixel mw - 1 - j when pixel j stands for
            # input x = stride * (j + 0.5) - 0.5, the centre convention the cubic
            # upsampling below assumes for every net.
            if heatmaps.shape[2] * ap['stride'] != padded.shape[1]:
                raise ValueError('flip averaging needs maps of width input / stride: %d px '
                                 'input, %d px maps' % (padded.shape[1], heatmaps.shape[2]))
            pafs_m, heat_m = _net_maps(forward, np.ascontiguousarray(x[..., ::-1]))
            heat_m, pafs_m = unmirror_maps(heat_m, pafs_m)
            heatmaps = (heatmaps + heat_m) * np.float32(0.5)
            pafs = (pafs + pafs_m) * np.float32(0.5)
        if lazy:
            heat_acc.add(heatmaps, ap['stride'], (rh, rw), smooth=smooth)
            paf_acc.add(pafs, ap['stride'], (rh, rw))
            continue
        heat = upsample_maps(heatmaps, ap['stride'], (rh, rw), (wh, ww), smooth=smooth)
        heat_acc = heat if heat_acc is None else np.add(heat_acc, heat, out=heat_acc)
        paf = upsample_maps(pafs, ap['stride'], (rh, rw), (wh, ww))
        paf_acc = paf if paf_acc is None else np.add(paf_acc, paf, out=paf_acc)
    if len(scales) > 1 and not lazy:
        heat_acc /= len(scales)
        paf_acc /= len(scales)
    return heat_acc, paf_acc, (h / wh, w / ww)


def _net_maps(forward, x):
    """``forward(x)`` as float32 (C, h, w) arrays (pafs, heatmaps)."""
    pafs, heatmaps = forward(x)
    heatmaps = np.asarray(heatmaps, np.float32)
    pafs = np.asarray(pafs, np.float32)
    return pafs.reshape((-1,) + pafs.shape[-2:]), heatmaps.reshape((-1,) + heatmaps.shape[-2:])


def flip_permutations():
    """(joint permutation (N_JOINTS,), limb permutation (L,)): the joint and the limb a
    horizontal mirror turns each one into (``flip_joint_pairs``; a limb a -> b becomes the
    limb mirror(a) -> mirror(b), which must exist)."""
    joints = np.arange(N_JOINTS)
    for a, b in params['flip_joint_pairs']:
        joints[a], joints[b] = b, a
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(params['limbs_point'])}
    limbs = np.array([index[(int(joints[a]), int(joints[b]))]
                      for a, b in params['limbs_point']], np.intp)
    return joints, limbs


def unmirror_maps(heatmaps, pafs):
    """Maps of a mirrored image -> maps of the image: mirror along x, swap left and right
    heatmap channels (channels past the joints, the background, stay), and take each limb's
    PAF from its mirror limb with the x component negated.  (C, h, w) arrays in, new arrays
    out."""
    joints, limbs = flip_permutations()
    heat_perm = np.concatenate([joints, np.arange(N_JOINTS, heatmaps.shape[0])])
    heat = heatmaps[heat_perm, :, ::-1]
    paf = pafs.reshape(len(limbs), 2, *pafs.shape[1:])[limbs, :, :, ::-1]
    paf[:, 0] *= -1  # fancy indexing made a copy
    return np.ascontiguousarray(heat), np.ascontiguousarray(paf.reshape(pafs.shape))


def to_image_coords(poses, scale_yx):
    """Map (N, J, 3) working-resolution poses to image coordinates (pixel centres kept)."""
    poses = np.array(poses, dtype=np.float64, copy=True)
    sy, sx = scale_yx
    if (sy, sx) != (1.0, 1.0) and len(poses):
        present = poses[:, :, 2] > 0
        poses[:, :, 0] = np.where(present, (poses[:, :, 0] + 0.5) * sx - 0.5, 0)
        poses[:, :, 1] = np.where(present, (poses[:, :, 1] + 0.5) * sy - 0.5, 0)
    return poses
