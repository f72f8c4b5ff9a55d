"""Net output maps upsampled to the image: as one matrix per axis (``upsample_maps``), or
lazily (``LazyMaps``), computing only the values the peak search and the PAF grouping read.

The interpolation matrices apply, along one axis, what cv2 does to a net output map (cubic
upsampling by the stride, the padding cropped, cubic resizing, optionally the heatmaps'
Gaussian), built from the cv2 functions themselves so the weights are exactly OpenCV's.
"""
import functools

import cv2
import numpy as np

from entity import params


class LazyMaps(object):
    """Upsampled, scale-averaged maps computed only where the grouping needs them.

    The PAF grouping reads the PAFs at ``n_integ_points`` points per candidate limb, and
    peaks can only lie in the few rows of a heatmap that rise above the threshold, so instead
    of upsampling every channel to the working resolution (after the forward, the largest
    cost; bench/RESULTS.md) values are computed from the net's low-resolution maps with the
    same interpolation matrices: value(c, y, x) = mean over scales of rh[y] @ maps[c] @
    rw[x].  ``sample`` serves ``score_pairs``; ``bounds``, ``run_segments`` and
    ``stacked_segments`` serve ``find_peaks``.
    """

    def __init__(self, out_hw):
        self.out_hw = tuple(out_hw)
        self.parts = []  # (maps (C, mh, mw), rh (H, mh), rw (W, mw))
        self.bands = []  # per part, the bands of rh and rw (interpolation_band)
        self._columns = {}

    def add(self, maps, stride, valid_hw, smooth=False):
        """One scale's (C, mh, mw) net output; ``smooth`` folds in the heatmap Gaussian."""
        c, mh, mw = maps.shape
        axes = [(n, stride, valid, out, smooth)
                for n, valid, out in zip((mh, mw), valid_hw, self.out_hw)]
        self.parts.append((maps,) + tuple(interpolation_matrix(*a) for a in axes))
        self.bands.append(tuple(interpolation_band(*a) for a in axes))

    def select(self, n):
        """The first ``n`` channels, as a LazyMaps (views, nothing computed)."""
        out = LazyMaps(self.out_hw)
        out.parts = [(m[:n], rh, rw) for m, rh, rw in self.parts]
        out.bands = self.bands
        return out

    @property
    def shape(self):
        return (self.parts[0][0].shape[0],) + self.out_hw

    def __len__(self):
        return self.shape[0]

    def sample(self, c, ys, xs):
        """Values at channels ``c``, rows ``ys``, columns ``xs`` (broadcast together).

        A row of an interpolation matrix has its non-zero weights in a few adjacent columns
        (cubic: 4 to 8; ``interpolation_band``), so each value is a small block of the map
        under them, weighted: sum_ab wh[y, a] ww[x, b] maps[c, i0[y] + a, j0[x] + b].  For
        many samples it is cheaper to upsample the maps along x once (``columns``, one GEMM)
        and gather only along y; the cheaper way is picked per scale from the measured costs
        (~6 ns per gathered element, ~0.01 ns per GEMM multiply-add: bench/RESULTS.md)."""
        c, ys, xs = np.broadcast_arrays(np.asarray(c, np.intp), np.asarray(ys, np.intp),
                                        np.asarray(xs, np.intp))
        total = np.zeros(c.shape, np.float32)
        for i, ((m, _, rw), ((h0, wh), (w0, ww))) in enumerate(zip(self.parts, self.bands)):
            rows = h0[ys][..., None] + np.arange(wh.shape[1])  # (..., Sh)
            n_blocks = c.size * wh.shape[1] * ww.shape[1]
            if 6 * n_blocks > 0.01 * m.size * rw.shape[0] + 3 * c.size * wh.shape[1]:
                block = self.columns(i)[c[..., None], rows, xs[..., None]]  # (..., Sh)
            else:
                windows = np.lib.stride_tricks.sliding_window_view(m, ww.shape[1], axis=2)
                block = np.einsum('...ab,...b->...a', windows[c[..., None], rows,
                                                              w0[xs][..., None]], ww[xs])
            total += np.einsum('...a,...a->...', block, wh[ys])
        if len(self.parts) > 1:
            total /= len(self.parts)
        return total

    def columns(self, i):
        """Scale ``i``'s maps upsampled along x only, (C, mh, W) = maps @ rw.T (kept)."""
        if self._columns.get(i) is None:
            m, _, rw = self.parts[i]
            self._columns[i] = (np.ascontiguousarray(m).reshape(-1, m.shape[2]) @ rw.T) \
                .reshape(m.shape[0], m.shape[1], -1)
        return self._columns[i]

    def rows(self, c, y0, y1):
        """Rows ``y0:y1`` of channel ``c``, (y1 - y0, W) float32, as ``dense()`` has them."""
        return self.stacked_rows([c], [y0], [y1], [0], y1 - y0)

    def stacked_rows(self, c, y0, y1, at, n_rows, x0=0, x1=None):
        """One (n_rows, x1 - x0) float32 array holding columns ``x0:x1`` of rows
        ``y0[k]:y1[k]`` of channel ``c[k]`` from row ``at[k]`` on, zeros elsewhere.  Per scale
        the small products ``rh[y0:y1] @ maps[c]`` are gathered, then one GEMM with
        ``rw[x0:x1].T`` upsamples them all along x (a GEMM per run was ~3x slower: many
        small calls)."""
        out = None
        for m, rh, rw in self.parts:
            low = np.zeros((n_rows, m.shape[2]), np.float32)
            for ck, a, b, start in zip(c, y0, y1, at):
                np.matmul(rh[a:b], m[ck], out=low[start:start + b - a])
            if out is None:
                out = low @ rw[x0:x1].T
            else:
                out += low @ rw[x0:x1].T
        if len(self.parts) > 1:
            out /= len(self.parts)
        return out

    def run_segments(self, c, y0, y1, thresh):
        """For each run of rows ``y0[k]:y1[k]`` of channel ``c[k]``, the runs of columns
        ``x0:x1`` that can hold a value above ``thresh`` there, each grown by one on both
        sides.  As ``bounds`` along x, from the maximum |value| of the low-resolution rows
        under the run only (far fewer columns than those of all maps together).  Returns
        (run k, x0, x1) int arrays, by run, then column."""
        c, y0, y1 = (np.asarray(v, np.intp) for v in (c, y0, y1))
        total = 0.0
        for (m, rh, rw), ((h0, wh), _) in zip(self.parts, self.bands):
            mh = m.shape[1]
            lo, hi = h0[y0], np.minimum(h0[y1 - 1] + wh.shape[1], mh)  # low-res rows used
            flat = np.zeros((m.shape[0] * mh + 1, m.shape[2]), np.float32)  # + a row: reduceat
            np.abs(m.reshape(-1, m.shape[2]), out=flat[:-1])
            # max over each run's low-res rows: reduceat over (start, stop) pairs, the
            # even results
            peak = np.maximum.reduceat(flat, np.stack([c * mh + lo, c * mh + hi], 1).ravel(),
                                       axis=0)[::2]
            total = total + (peak @ np.abs(rw).T) * np.abs(rh).sum(axis=1).max()
        return runs(total / len(self.parts) * (1 + 1e-4) + 1e-6, thresh)

    def stacked_segments(self, c, y0, y1, x0, x1, at, shape):
        """A ``shape`` float32 canvas holding rows ``y0[k]:y1[k]``, columns ``x0[k]:x1[k]``
        of channel ``c[k]`` at rows ``at[k]:``, columns ``1:``, zeros elsewhere.  Each block
        is two small products per scale on the bands of the interpolation matrices
        (``rh[y0:y1] @ maps[c] @ rw[x0:x1].T``, the first one shared by the blocks of one run
        of rows), accumulated in place."""
        out = np.zeros(shape, np.float32)
        for i, ((m, rh, rw), ((h0, wh), (w0, ww))) in enumerate(zip(self.parts, self.bands)):
            rwt = self._transposed(i)
            mh, mw = m.shape[1:]
            key = None
            for ck, a, b, xa, xb, start in zip(c.tolist(), y0.tolist(), y1.tolist(),
                                              x0.tolist(), x1.tolist(), at.tolist()):
                if key != (ck, a, b):
                    key = (ck, a, b)
                    ia, ib = h0[a], min(h0[b - 1] + wh.shape[1], mh)
                    low = rh[a:b, ia:ib] @ m[ck, ia:ib]
                ja, jb = w0[xa], min(w0[xb - 1] + ww.shape[1], mw)
                block = out[start:start + b - a, 1:1 + xb - xa]
                if i == 0:
                    np.matmul(low[:, ja:jb], rwt[ja:jb, xa:xb], out=block)
                else:
                    block += low[:, ja:jb] @ rwt[ja:jb, xa:xb]
        if len(self.parts) > 1:
            out /= len(self.parts)
        return out

    def _transposed(self, i):
        """Scale ``i``'s ``rw.T`` as a C-contiguous array (kept): its column ranges are
        strided views BLAS reads in place."""
        key = ('rwt', i)
        if self._columns.get(key) is None:
            self._columns[key] = np.ascontiguousarray(self.parts[i][2].T)
        return self._columns[key]

    def bounds(self):
        """``(rows (C, H), columns (C, W))``: upper bounds of the maximum |value| of every row
        and every column (one whose bound is at most a threshold has no value above it):
        |rh[y] @ maps[c] @ rw[x]| <= sum_i |rh[y, i]| max_j |maps[c, i, j]| max_x sum_j
        |rw[x, j]|, and the same along x.  From the low-resolution maps (cheap), a few more
        rows than the exact row maxima; plus a margin for float32 rounding (sums of
        ~50 non-negative terms: < 1e-5 relative)."""
        rows, cols = 0.0, 0.0
        for m, rh, rw in self.parts:
            a, rh, rw = np.abs(m), np.abs(rh), np.abs(rw)
            rows = rows + (rh @ a.max(axis=2).T) * rw.sum(axis=1).max()
            cols = cols + (rw @ a.max(axis=1).T) * rh.sum(axis=1).max()
        return tuple((b / len(self.parts)).T * (1 + 1e-4) + 1e-6 for b in (rows, cols))

    def dense(self):
        """The full (C, H, W) array (what ``compute_maps(lazy=False)`` returns)."""
        return np.stack([self.rows(c, 0, self.out_hw[0]) for c in range(len(self))])


@functools.lru_cache(maxsize=64)
def interpolation_band(n_map, stride, n_valid, n_out, smooth=False):
    """``interpolation_matrix`` (same arguments), whose rows have their non-zeros within a
    few adjacent columns, as ``(start (n_out,), weights (n_out, S))``: row y is
    ``weights[y]`` at columns ``start[y]:start[y] + S`` and exact zeros elsewhere."""
    matrix = interpolation_matrix(n_map, stride, n_valid, n_out, smooth)
    nz = matrix != 0
    n_in = matrix.shape[1]
    first = np.where(nz.any(axis=1), nz.argmax(axis=1), 0)
    last = np.where(nz.any(axis=1), n_in - 1 - nz[:, ::-1].argmax(axis=1), 0)
    width = max(1, int((last - first).max()) + 1)
    start = np.clip(first, 0, n_in - width)
    weights = matrix[np.arange(n_out)[:, None], start[:, None] + np.arange(width)]
    return start, np.ascontiguousarray(weights)


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_map, stride, n_valid, n_out, smooth=False):
    """(n_out, n_map) matrix doing, along one axis, what cv2 does to a net output map:
    cubic upsampling by ``stride`` (cv2.resize), keeping the first ``n_valid`` pixels
    (dropping the padding), cubic resizing to ``n_out``, and with ``smooth`` the Gaussian of
    ``smooth_heatmaps`` (cv2.GaussianBlur, same kernel and border).  Built by applying those
    cv2 functions to the identity, so the weights are exactly OpenCV's.  Cached: a video's
    frames reuse them."""
    m = cv2.resize(np.eye(n_map, dtype=np.float32), (n_map, n_map * stride),
                   interpolation=cv2.INTER_CUBIC)[:n_valid]
    if n_valid != n_out:
        r = cv2.resize(np.eye(n_valid, dtype=np.float32), (n_valid, n_out),
                       interpolation=cv2.INTER_CUBIC)
        m = r @ m
    if smooth:
        g = cv2.getGaussianKernel(params['ksize'], params['gaussian_sigma'], cv2.CV_32F)
        blur = cv2.sepFilter2D(np.eye(n_out, dtype=np.float32), -1, np.ones((1, 1), np.float32),
                               g, borderType=cv2.BORDER_REFLECT_101)
        m = blur @ m
    m = np.ascontiguousarray(m, np.float32)
    m.flags.writeable = False
    return m


def upsample_maps(maps, stride, valid_hw, out_hw, smooth=False):
    """(C, h, w) net output -> (C, out_h, out_w): cubic upsampling by ``stride``, cropping to
    ``valid_hw`` (the un-padded input), cubic resizing to ``out_hw`` (and Gaussian smoothing
    with ``smooth``).

    All these steps are linear and separable, so they are applied as one matrix per axis (two
    batched matmuls; ``interpolation_matrix``): faster than cv2.resize on the nets' many
    channels, and the smoothing comes for free.  Same result as the cv2 calls up to
    float rounding (tests/test_pose_core.py).
    """
    c, mh, mw = maps.shape
    rh = interpolation_matrix(mh, stride, valid_hw[0], out_hw[0], smooth)
    rw = interpolation_matrix(mw, stride, valid_hw[1], out_hw[1], smooth)
    oh, ow = out_hw
    if mh * ow * (mw + oh) <= oh * mw * (mh + ow):  # cheaper order first
        return np.matmul(rh, np.matmul(maps, rw.T))
    return np.matmul(np.matmul(rh, maps), rw.T)


def runs(bounds, thresh):
    """``(map, start, stop)`` arrays: per map of ``bounds`` (C, N), the runs of indices that
    can hold peaks (bound > ``thresh``), each grown by one on both sides for the neighbours;
    ordered by map, then index."""
    mask = bounds > thresh
    grown = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)  # a zero column each side
    grown[:, 1:-1] = mask
    grown[:, 2:] |= mask
    grown[:, :-2] |= mask
    grown[:, 0] = grown[:, -1] = 0
    edges = np.diff(grown, axis=1)
    c, start = np.nonzero(edges == 1)
    stop = np.nonzero(edges == -1)[1]
    return c, start, stop
