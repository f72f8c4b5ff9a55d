"""Persistent person IDs and jitter-free keypoints on video.

``PoseTracker.update(poses, t)`` takes one frame's detections (N, K, 3: x, y, confidence,
missing joints all 0) and that frame's timestamp in seconds (video time or the camera clock)
and returns each person's ID and smoothed keypoints:

* matching: COCO's object keypoint similarity (OKS) between each detection and each track's
  keypoints predicted to time ``t`` (constant velocity), solved as a minimum-cost assignment
  (not first-come greedy); pairs below ``track_min_oks`` never match;
* a track that finds no detection is kept for ``track_max_lost_s`` seconds, so a person
  hidden for a moment gets the same ID back; it is looked for where it was heading, where it
  was last seen, and where its states of the last ``track_relink_history_s`` seconds predict
  it (the last detections before an occlusion often place the hidden joints at the
  occluder's edge, which bends the latest state); new people get new IDs; IDs are never
  reused;
* smoothing: a One-Euro filter (Casiez et al., CHI 2012) per keypoint of each track, its
  cutoff rising with the joint's speed measured in person sizes per second (resolution and
  distance do not change the filter), its steps taken from the real time between frames.
  The keypoints are filtered in a frame that moves with the person: the person's motion (the
  median displacement of its joints) has a One-Euro filter of its own, which can follow a
  walking person closely because its noise is averaged over the joints, so the per-keypoint
  filters only smooth the motion relative to the person and cut jitter without lagging.
  A joint not seen in a frame is output as missing (0, 0, 0): the filter keeps its state for
  when it comes back, but no stale position is ever output.

All parameters are ``entity.params['track_*']`` and ``['smooth_*']``.
"""
import math

import cv2
import numpy as np

from entity import params


TENTATIVE, RETIRED = -1, -2  # ids of tracks not (yet / any more) holding an ID


def linear_sum_assignment(cost):
    """Row and column indices of a minimum-cost matching of a (n, m) cost matrix that pairs
    min(n, m) rows and columns (what ``scipy.optimize.linear_sum_assignment`` returns).

    Solved by OpenCV's EMD, a transportation simplex: with unit supplies and demands its
    optimal flow is a 0/1 assignment (scipy, not a dependency here, would only add this).
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError('cost matrix must be 2-D, got shape %s' % (cost.shape,))
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not np.all(np.isfinite(cost)):
        raise ValueError('cost matrix has non-finite entries')
    # EMD wants non-negative float32 costs; a constant shift keeps the optimum (min(n, m)
    # pairs are always made).
    shifted = (cost - cost.min()).astype(np.float32)
    _, _, flow = cv2.EMD(np.ones((n, 1), np.float32), np.ones((m, 1), np.float32),
                         cv2.DIST_USER, cost=shifted)
    rows, cols = np.nonzero(flow > 0.5)
    return rows.astype(np.int64), cols.astype(np.int64)


def _masked_median(values, mask):
    """Median over axis 1 of (M, K, 2) ``values`` where ``mask`` (M, K); 0 where none
    (np.nanmedian goes through masked arrays: several times slower on these small arrays)."""
    v = np.sort(np.where(mask[..., None], values, np.inf), axis=1)
    n = mask.sum(1)
    lo = np.maximum(n - 1, 0) // 2
    hi = n // 2
    take = lambda i: np.take_along_axis(v, np.broadcast_to(i[:, None, None], (len(v), 1, 2)),
                                        axis=1)[:, 0]  # noqa: E731
    return np.where(n[:, None] > 0, 0.5 * (take(lo) + take(np.minimum(hi, v.shape[1] - 1))), 0.0)


def keypoint_box_size(xy, present):
    """Longer side of the box around each person's present keypoints: (M, K, 2), (M, K) ->
    (M,); 0 for fewer than two distinct points."""
    big = np.where(present[..., None], xy, np.inf)
    small = np.where(present[..., None], xy, -np.inf)
    lo, hi = big.min(axis=1), small.max(axis=1)
    side = np.where(np.isfinite(lo) & np.isfinite(hi), hi - lo, 0.0)
    return side.max(axis=1)


def oks_matrix(ref, ref_present, det, det_present, sigmas, ref_count=None, count=None,
               ref_scale=None, min_size=1.0):
    """OKS between every track (T, K, 2) and detection (N, K, 2): COCO's per-keypoint
    exp(-d^2 / (2 s^2 (2 sigma)^2)) summed over the joints both have and divided, as COCO
    divides by the labelled joints, by the larger of the two joint counts (``ref_count``, (T,),
    and ``count``, (N,), override them), so that a fragment of a person does not look like
    all of it.
    The area s^2 is the square of the larger of the two keypoint boxes' longer sides, the
    tracks' times ``ref_scale`` (T,) if given (more tolerance).  (T, N)."""
    ref_size = keypoint_box_size(ref, ref_present)
    if ref_scale is not None:
        ref_size = ref_size * ref_scale
    size = np.maximum(ref_size[:, None], keypoint_box_size(det, det_present)[None, :])
    area = np.maximum(size, min_size) ** 2
    both = ref_present[:, None, :] & det_present[None, :, :]
    d2 = ((ref[:, None, :, :] - det[None, :, :, :]) ** 2).sum(-1)
    kappa2 = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    e = np.exp(-d2 / (2.0 * area[..., None] * kappa2))
    n_ref = ref_present.sum(1) if ref_count is None else np.asarray(ref_count)
    n_det = det_present.sum(1) if count is None else np.asarray(count)
    n = np.maximum(n_ref[:, None], n_det[None, :])
    return (e * both).sum(-1) / np.maximum(n, 1)


def _assign(sim, gate):
    """Pairs (track, detection) with similarity >= ``gate`` of a maximum-similarity
    assignment.  Pairs that are each other's only candidate are taken directly (the usual
    case: people apart), the rest go to the assignment solver."""
    feasible = sim >= gate
    if not feasible.any():
        return []
    rows_n, cols_n = feasible.sum(1), feasible.sum(0)
    lone = feasible & (rows_n[:, None] == 1) & (cols_n[None, :] == 1)
    pairs = list(zip(*np.nonzero(lone)))
    rest_r = np.nonzero((rows_n > 0) & ~lone.any(1))[0]
    rest_c = np.nonzero((cols_n > 0) & ~lone.any(0))[0]
    if len(rest_r) and len(rest_c):
        sub = sim[np.ix_(rest_r, rest_c)]
        # infeasible pairs cost more than any feasible one, so the solver makes as many
        # feasible pairs as it can; those left infeasible are dropped below
        cost = np.where(sub >= gate, 1.0 - sub, 2.0 + len(rest_r) + len(rest_c))
        r, c = linear_sum_assignment(cost)
        keep = sub[r, c] >= gate
        pairs += list(zip(rest_r[r[keep]], rest_c[c[keep]]))
    return [(int(a), int(b)) for a, b in pairs]


class PoseTracker(object):
    """Frame-to-frame person identities and One-Euro smoothed keypoints (see the module).

    ``sigmas``: one OKS sigma per keypoint, which sets the layout (default: the 18 body joints';
    camera_face_demo.py tracks face boxes as 2 corner points).  ``smooth=False`` returns the
    raw keypoints (the tracks still follow them for matching).
    """

    def __init__(self, sigmas=None, smooth=True, min_oks=None,
                 max_lost_s=None, max_people=None, min_cutoff=None, beta=None,
                 d_cutoff=None, person_min_cutoff=None, person_beta=None, fallback_dt=None,
                 relink_states=None):
        p = params
        self.sigmas = np.asarray(p['track_oks_sigmas'] if sigmas is None else sigmas,
                                 np.float64)
        if self.sigmas.ndim != 1 or not len(self.sigmas) or not (self.sigmas > 0).all():
            raise ValueError('sigmas must be positive numbers, one per keypoint')
        self.n_joints = len(self.sigmas)
        self.smooth = smooth
        self.min_oks = p['track_min_oks'] if min_oks is None else min_oks
        self.confirm_frames = p['track_confirm_frames']
        self.lost_growth = p['track_lost_growth']
        self.max_lost_s = p['track_max_lost_s'] if max_lost_s is None else max_lost_s
        self.max_people = p['track_max_people'] if max_people is None else max_people
        self.min_cutoff = p['smooth_min_cutoff'] if min_cutoff is None else min_cutoff
        self.beta = p['smooth_beta'] if beta is None else beta
        self.d_cutoff = p['smooth_d_cutoff'] if d_cutoff is None else d_cutoff
        self.person_min_cutoff = (p['smooth_person_min_cutoff'] if person_min_cutoff is None
                                  else person_min_cutoff)
        self.person_beta = p['smooth_person_beta'] if person_beta is None else person_beta
        self.fallback_dt = p['smooth_fallback_dt'] if fallback_dt is None else fallback_dt
        self.history = p['track_relink_states'] if relink_states is None else relink_states
        self.history_step = p['track_relink_history_s'] / max(self.history, 1)
        self.next_id = 0
        self.t = None           # the last frame's (effective) time
        self.t_prev = None      # the frame's before
        self.dt = None          # the last positive frame interval
        self.clock_repairs = 0  # frames whose timestamp did not increase
        k = self.n_joints
        # One row per live track.
        self.ids = np.zeros(0, np.int64)
        self.pos = np.zeros((0, k, 2))     # filtered position of each joint (the filter state)
        self.vel = np.zeros((0, k, 2))     # filtered velocity of each joint relative to its person
        self.vel_person = np.zeros((0, 2))  # filtered velocity of each person, px/s
        self.tt = np.zeros(0)               # time the track was last matched
        self.jt = np.zeros((0, k))         # time of each joint's last update
        self.has = np.zeros((0, k), bool)  # the joint has been seen (has a state)
        self.n_seen = np.zeros(0, np.int64)  # joints of the track's last detection
        self.hits = np.zeros(0, np.int64)    # frames the track was matched in
        self.born = np.zeros(0)              # time the track started
        # the track's earlier states, latest first, one per history_step seconds: a lost track
        # is also looked for where each of them predicts it (see _similarity)
        h = self.history
        self.h_pos = np.zeros((0, h, k, 2))
        self.h_vel = np.zeros((0, h, 2))
        self.h_tt = np.zeros((0, h))
        self.h_has = np.zeros((0, h, k), bool)  # all False: no such update yet
        self.h_n = np.zeros((0, h), np.int64)
        self.frames = 0                      # frames seen by this tracker

    def __len__(self):
        return len(self.ids)

    def _frame_time(self, t):
        t = float(t)
        if not math.isfinite(t):
            raise ValueError('frame timestamp must be a finite number of seconds, got %r' % t)
        self.t_prev = self.t
        if self.t is not None:
            if t > self.t:
                self.dt = t - self.t
            else:  # repeated or backwards clock: step on by the last interval
                self.clock_repairs += 1
                t = self.t + (self.dt or self.fallback_dt)
        self.t = t
        return t

    def update(self, poses, t, scores=None):
        """One frame: ``poses`` (N, K, 3), its timestamp ``t`` (seconds), optional ``scores``
        (N,) ranking people when more than ``track_max_people`` come.

        Returns ``(ids, smoothed)``: (N,) int IDs in the order of ``poses`` (-1: none, for a
        person not yet confirmed, one past ``track_max_people`` or one without a joint) and
        (N, K, 3) keypoints, smoothed where ``smooth``, with each detection's own confidences
        and its missing joints 0, 0, 0.
        """
        poses = np.asarray(poses, np.float64)
        k = self.n_joints
        if poses.size == 0:
            poses = poses.reshape(0, k, 3)
        if poses.ndim != 3 or poses.shape[1:] != (k, 3):
            raise ValueError('poses must have shape (N, %d, 3), got %s' % (k, poses.shape))
        if not np.all(np.isfinite(poses)):
            raise ValueError('poses contain NaN or infinite values')
        t = self._frame_time(t)
        n = len(poses)
        ids = np.full(n, -1, np.int64)
        out = poses.copy()
        present = poses[:, :, 2] > 0
        out[~present] = 0.0

        tracked = np.nonzero(present.any(1))[0]  # a detection without joints is no one
        if len(tracked) > self.max_people:  # bound time and memory: the strongest are tracked
            rank = poses[:, :, 2].sum(1) if scores is None else np.asarray(scores, np.float64)
            if rank.shape != (n,):
                raise ValueError('%d scores for %d poses' % (rank.size, n))
            order = tracked[np.argsort(-rank[tracked], kind='stable')]
            tracked = np.sort(order[:self.max_people])
        det, det_present = poses[tracked, :, :2], present[tracked]

        pairs = []
        if len(self.ids) and len(tracked):
            pairs = _assign(self._similarity(np.arange(len(self.ids)), t, det, det_present,
                                             det_present.sum(1)), self.min_oks)
        matched_t = np.array([a for a, _ in pairs], np.int64)
        matched_d = np.array([b for _, b in pairs], np.int64)

        # matched tracks: filter their joints seen now
        if len(pairs):
            self._remember(matched_t)
            self._filter(matched_t, det[matched_d], det_present[matched_d], t)
        self.n_seen[matched_t] = det_present[matched_d].sum(1)
        self.hits[matched_t] += 1
        # detections without a track start one
        unmatched = np.ones(len(tracked), bool)
        unmatched[matched_d] = False
        new_d = np.nonzero(unmatched)[0]
        first_new = len(self.ids)
        self._start(det[new_d], det_present[new_d], t)
        self.frames += 1
        self._confirm(t)

        rows = np.concatenate([matched_t, first_new + np.arange(len(new_d))]).astype(np.int64)
        dets = tracked[np.concatenate([matched_d, new_d]).astype(np.int64)]
        ids[dets] = self.ids[rows]
        if self.smooth:
            out[dets, :, :2] = np.where(present[dets][..., None], self.pos[rows], 0.0)
        # tracks lost too long end (with IDs retired by _confirm); lost tracks beyond
        # max_people end, the longest lost first
        keep = (t - self.tt <= self.max_lost_s) & (self.ids != RETIRED)
        excess = keep.sum() - 2 * self.max_people
        if excess > 0:
            alive = np.nonzero(keep)[0]
            keep[alive[np.argsort(self.tt[alive], kind='stable')[:excess]]] = False
        self._drop(keep)
        return ids, out

    def _similarity(self, rows, t, xy, present, count):
        """OKS of tracks ``rows`` predicted to time ``t`` against people (M, K, 2) with joints
        ``present`` (M, K), ``count`` (M,) joints each.  A track lost for a while may have
        stopped: it may also match where it was last seen.  And a person going behind an
        occluder is often last seen in part, with the hidden joints placed at the occluder's
        edge, which bends the track's last positions and velocity: a lost track may also match
        where each of its states of the last ``track_relink_history_s`` seconds predicts it."""
        since = t - self.tt[rows]
        ref = self.pos[rows] + self.vel_person[rows, None, :] * since[:, None, None]
        # the prediction's uncertainty grows with the time since the track was last seen
        scale = 1.0 + self.lost_growth * since
        sim = oks_matrix(ref, self.has[rows], xy, present, self.sigmas,
                         ref_count=self.n_seen[rows], count=count, ref_scale=scale)
        lost = np.nonzero(self.tt[rows] < self.t_prev)[0] if self.t_prev is not None else []
        if len(lost):
            r = rows[lost]
            sim[lost] = np.maximum(sim[lost], oks_matrix(
                self.pos[r], self.has[r], xy, present, self.sigmas, ref_count=self.n_seen[r],
                count=count, ref_scale=scale[lost]))
            for h in range(self.history):  # one state at a time: memory as for one
                held = np.nonzero(self.h_has[r, h].any(1))[0]
                if not len(held):
                    break
                rh = r[held]
                since_h = t - self.h_tt[rh, h]
                ref_h = self.h_pos[rh, h] + self.h_vel[rh, h, None, :] * since_h[:, None, None]
                sim[lost[held]] = np.maximum(sim[lost[held]], oks_matrix(
                    ref_h, self.h_has[rh, h], xy, present, self.sigmas, ref_count=self.h_n[rh, h],
                    count=count, ref_scale=1.0 + self.lost_growth * since_h))
        return sim

    def _remember(self, rows):
        """Tracks ``rows`` are about to be updated: their state goes first in their history
        if the latest there is ``history_step`` seconds older (or there is none)."""
        if not self.history:
            return
        rows = rows[(self.tt[rows] - self.h_tt[rows, 0] >= self.history_step)
                    | ~self.h_has[rows, 0].any(1)]
        for name, now in (('h_pos', self.pos), ('h_vel', self.vel_person), ('h_tt', self.tt),
                          ('h_has', self.has), ('h_n', self.n_seen)):
            past = getattr(self, name)
            past[rows] = np.concatenate([now[rows][:, None], past[rows][:, :-1]], axis=1)

    def _confirm(self, t):
        """New tracks get an ID once seen in ``track_confirm_frames`` frames (at once in the
        first frames of a run), so that a false detection of a frame or two gets none.  A new
        track that matches a track lost before it appeared is that person coming back (from
        behind an occlusion, often first seen in pieces): it takes the lost track's ID."""
        new = np.nonzero((self.ids == TENTATIVE) & ((self.hits >= self.confirm_frames)
                                                    | (self.frames <= self.confirm_frames)))[0]
        if not len(new):
            return
        lost = np.nonzero((self.ids >= 0) & (self.tt < t))[0]
        if len(lost):
            now = self.jt[new] == t
            sim = self._similarity(lost, t, self.pos[new], now, self.n_seen[new])
            # only a track lost before the new one appeared can be the same person
            sim[self.tt[lost][:, None] >= self.born[new][None, :]] = 0.0
            for a, b in _assign(sim, self.min_oks):
                self.ids[new[b]] = self.ids[lost[a]]
                self.ids[lost[a]] = RETIRED
        still = new[self.ids[new] == TENTATIVE]
        self.ids[still] = self.next_id + np.arange(len(still))
        self.next_id += len(still)

    def _cutoff_alpha(self, min_cutoff, beta, speed, dt):
        """One-Euro: the cutoff rises with the speed (person sizes per second)."""
        cutoff = min_cutoff + beta * speed
        return cutoff * dt / (cutoff * dt + 1.0 / (2.0 * math.pi))

    def _filter(self, rows, xy, seen, t):
        """One-Euro step for tracks ``rows`` given their joints ``seen`` at ``xy`` (vectorised):
        first the person's motion, which moves all its joints, then each joint relative to it."""
        pos, vel, jt, has = self.pos[rows], self.vel[rows], self.jt[rows], self.has[rows]
        u, dt_p = self.vel_person[rows], (t - self.tt[rows])[:, None]
        size = np.maximum(keypoint_box_size(pos, has), 1.0)[:, None]
        a_d = self._cutoff_alpha(self.d_cutoff, 0.0, 0.0, dt_p)
        old = seen & has
        n_old = old.sum(1)[:, None]
        # the person: median displacement of the joints it had and sees again (else its
        # predicted motion); joints that jump, e.g. under a partial occlusion, do not move it
        shift = np.where(n_old > 0, _masked_median(xy - pos, old), u * dt_p)
        u = u + a_d * (shift / dt_p - u)
        a_p = self._cutoff_alpha(self.person_min_cutoff, self.person_beta,
                                 np.sqrt((u ** 2).sum(1, keepdims=True)) / size, dt_p)
        pos = pos + (a_p * shift)[:, None, :]
        # each joint, relative to its person
        dt = np.where(old, t - jt, 1.0)[..., None]
        rel = xy - pos
        new_vel = vel + self._cutoff_alpha(self.d_cutoff, 0.0, 0.0, dt) * (rel / dt - vel)
        a = self._cutoff_alpha(self.min_cutoff, self.beta,
                               np.sqrt((new_vel ** 2).sum(-1, keepdims=True)) / size[:, None], dt)
        pos = np.where(old[..., None], pos + a * rel, np.where(seen[..., None], xy, pos))
        vel = np.where(old[..., None], new_vel, np.where(seen[..., None], 0.0, vel))
        self.pos[rows], self.vel[rows], self.vel_person[rows] = pos, vel, u
        self.jt[rows] = np.where(seen, t, jt)
        self.has[rows] = has | seen
        self.tt[rows] = t

    _STATE = ('ids', 'pos', 'vel', 'jt', 'has', 'n_seen', 'vel_person', 'tt', 'hits', 'born',
              'h_pos', 'h_vel', 'h_tt', 'h_has', 'h_n')

    def _start(self, xy, seen, t):
        m = len(xy)
        if m == 0:
            return
        new = {'ids': np.full(m, TENTATIVE), 'pos': np.where(seen[..., None], xy, 0.0),
               'vel': np.zeros((m, self.n_joints, 2)), 'jt': np.where(seen, t, 0.0),
               'has': seen, 'n_seen': seen.sum(1),
               'vel_person': np.zeros((m, 2)), 'tt': np.full(m, t),
               'hits': np.ones(m, np.int64), 'born': np.full(m, t),
               'h_pos': np.zeros((m, self.history, self.n_joints, 2)),
               'h_vel': np.zeros((m, self.history, 2)), 'h_tt': np.zeros((m, self.history)),
               'h_has': np.zeros((m, self.history, self.n_joints), bool),
               'h_n': np.zeros((m, self.history), np.int64)}
        for name in self._STATE:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))

    def _drop(self, keep):
        if not keep.all():
            for name in self._STATE:
                setattr(self, name, getattr(self, name)[keep])
