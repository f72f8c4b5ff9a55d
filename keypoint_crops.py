"""Face and hand boxes cut out of an image as padded squares, and one keypoint per map of a
keypoint net (face_detector.py, hand_detector.py, demo.py, camera_face_demo.py)."""
import numpy as np

import cli
from entity import params
from paf_grouping import find_peaks, refine_peaks


def box_window(box):
    """Box (x, y, w, h) (floats) -> the integer pixel window (x0, y0, x1, y1) it covers,
    ends rounded to the nearest pixel boundary; None for a non-finite or zero-area box."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise cli.UserError('a box is 4 numbers x, y, w, h; got %r' % (box,))
    if not np.isfinite([x, y, w, h]).all():
        return None
    x0, y0 = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x1, y1 = int(np.floor(x + w + 0.5)), int(np.floor(y + h + 0.5))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def crop_square(img, box, pad_value=0, max_factor=None):
    """Cut box (x, y, w, h) out of an HxWxC image as a square, padded, never skipped.

    The box's pixel window (``box_window``) is copied into an SxS canvas (S = its longer
    side) filled with ``pad_value``: the parts past the image border and, for a non-square
    box, the bottom/right strip.  Canvas pixel (u, v) is image pixel (x0 + u, y0 + v).
    Returns (canvas, (x0, y0), (h, w) of the window), or None when the box has no area or
    does not overlap the image.  A box more than ``max_factor`` (``crop_max_box_factor``)
    times the image's longer side raises ``cli.UserError`` (it would be all padding).
    """
    window = box_window(box)
    if window is None:
        return None
    x0, y0, x1, y1 = window
    ih, iw = img.shape[:2]
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, iw), min(y1, ih)
    if ax1 <= ax0 or ay1 <= ay0:
        return None
    side = max(x1 - x0, y1 - y0)
    max_factor = params['crop_max_box_factor'] if max_factor is None else max_factor
    if side > max_factor * max(ih, iw):
        raise cli.UserError('box %s is %d px wide, more than %g times the %dx%d image'
                            % (tuple(round(float(v), 1) for v in box), side, max_factor, iw, ih))
    canvas = np.empty((side, side) + img.shape[2:], img.dtype)
    canvas[...] = pad_value
    canvas[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = img[ay0:ay1, ax0:ax1]
    return canvas, (x0, y0), (y1 - y0, x1 - x0)


def best_peak_per_map(maps, thresh):
    """One keypoint per map of a (C, H, W) stack: its highest local maximum above ``thresh``
    (``find_peaks``; exact ties keep the first in row-major order), refined to sub-pixel by a
    parabola through the peak and its two neighbours along each axis (``refine_peaks``:
    exact for a peak symmetric about a pixel or about the midpoint of two pixels).

    Returns (C, 3) float64 x, y, score; 0, 0, 0 where a map has nothing above ``thresh``.
    """
    maps = np.asarray(maps, np.float32)
    out = np.zeros((maps.shape[0], 3))
    peaks = find_peaks(maps, thresh)
    if len(peaks) == 0:
        return out
    # highest score per channel; among equal scores the first (row-major) one
    order = np.lexsort((peaks[:, 4], -peaks[:, 3], peaks[:, 0]))
    ch = peaks[order, 0].astype(np.intp)
    first = np.ones(len(order), bool)
    first[1:] = ch[1:] != ch[:-1]
    best = refine_peaks(maps, peaks[order[first]], 'quadratic')
    out[best[:, 0].astype(np.intp)] = best[:, 1:4]
    return out
