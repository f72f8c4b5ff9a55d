"""Skeletons, keypoints, boxes and tracking IDs drawn on BGR images, coloured like OpenPose's."""
import functools

import cv2
import numpy as np

from entity import JointType, params

N_JOINTS = len(JointType)


@functools.lru_cache(maxsize=8)
def hue_colors(n):
    """``n`` BGR colours evenly spaced around the hue circle from red, like OpenPose's."""
    hsv = np.zeros((1, n, 3), np.uint8)
    hsv[0, :, 0] = np.round(np.arange(n) * 180.0 / n).astype(np.uint8)
    hsv[0, :, 1:] = 255
    return tuple(tuple(int(v) for v in c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0])


def draw_person_pose(img, poses):
    """Draw skeletons on a copy of a BGR image: one hue per limb and per joint (OpenPose's
    scheme), semi-transparent limbs, line width scaled to the image.  Returns the copy."""
    canvas = img.copy()
    poses = np.asarray(poses, np.float64).reshape(-1, N_JOINTS, 3)
    if len(poses) == 0:
        return canvas
    drawn = [i for i in range(len(params['limbs_point'])) if i not in params['redundant_limbs']]
    limb_colors = hue_colors(len(drawn))
    joint_colors = hue_colors(N_JOINTS)
    thick = max(2, int(round(max(img.shape[:2]) / 240)))
    overlay = canvas.copy()
    # pixel positions as Python ints once (round half to even, as round()), not per point
    points = np.rint(poses[:, :, :2]).astype(np.int64).tolist()
    present = (poses[:, :, 2] > 0).tolist()
    for xy, seen in zip(points, present):
        for color, limb in zip(limb_colors, drawn):
            ja, jb = params['limbs_point'][limb]
            if seen[ja] and seen[jb]:
                cv2.line(overlay, tuple(xy[ja]), tuple(xy[jb]), color, thick, cv2.LINE_AA)
    cv2.addWeighted(overlay, 0.7, canvas, 0.3, 0, dst=canvas)
    for xy, seen in zip(points, present):
        for j in range(N_JOINTS):
            if seen[j]:
                cv2.circle(canvas, tuple(xy[j]), thick + 1, joint_colors[j], -1, cv2.LINE_AA)
    return canvas


def id_color(person_id):
    """A BGR colour of its own for each tracking ID, the same in every frame and run: hues
    stepped by the golden ratio, so that consecutive IDs look far apart."""
    hue = int(round((person_id * 0.6180339887) % 1.0 * 180)) % 180
    bgr = cv2.cvtColor(np.array([[[hue, 200, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(v) for v in bgr)


def draw_person_ids(img, poses, ids):
    """Draw each person's tracking ID (``ids``; negative: none) in place, centred above the
    person's highest keypoint on a label of the ID's colour.  ``poses``: (N, K, 3), any K."""
    poses = np.asarray(poses, np.float64)
    scale = min(1.0, max(0.4, max(img.shape[:2]) / 900.0))
    thick = max(1, int(round(2 * scale)))
    for pose, pid in zip(poses, np.asarray(ids).tolist()):
        seen = pose[:, 2] > 0
        if pid < 0 or not seen.any():
            continue
        text = str(pid)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = pose[seen][np.argmin(pose[seen, 1])]
        x = int(np.clip(top[0] - tw / 2 - 2, 0, max(img.shape[1] - tw - 4, 0)))
        y = int(np.clip(top[1] - 6, th + base + 4, img.shape[0]))
        cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), id_color(pid), -1)
        cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thick, cv2.LINE_AA)
    return img


# ----------------------------------------------------------------------------- faces and hands

def _thickness(img):
    """Keypoint line width: 1 px per 480 px of the image's longer side."""
    return max(1, int(round(max(img.shape[:2]) / 480.0)))


def draw_face_keypoints(img, keypoints, color=(255, 255, 0)):
    """Draw 70 face keypoints (those with a score > 0) and the ``face_line_indices`` lines
    between found ones on a copy of a BGR image.  Returns the copy."""
    canvas = img.copy()
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    found = kp[:, 2] > 0
    t = _thickness(img)
    for a, b in params['face_line_indices']:
        if a < len(kp) and b < len(kp) and found[a] and found[b]:
            cv2.line(canvas, _pt(kp[a]), _pt(kp[b]), color, t, cv2.LINE_AA)
    for p in kp[found]:
        cv2.circle(canvas, _pt(p), t + 1, color, -1, cv2.LINE_AA)
    return canvas


def draw_box(img, box, color=(255, 255, 255)):
    """Draw box (x, y, w, h) in place; returns ``img``."""
    if box is not None:
        x, y, w, h = box
        cv2.rectangle(img, _pt((x, y)), _pt((x + w, y + h)), color, 1)
    return img


def _pt(p):
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_hand_keypoints(img, keypoints):
    """Draw 21 hand keypoints on a copy of a BGR image: one colour per finger
    (``fingers_indices``, thumb red to little finger violet), lines between found points."""
    canvas = img.copy()
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    found = kp[:, 2] > 0
    t = _thickness(img)
    colors = hue_colors(len(params['fingers_indices']))
    for color, finger in zip(colors, params['fingers_indices']):
        for a, b in finger:
            if found[a] and found[b]:
                cv2.line(canvas, _pt(kp[a]), _pt(kp[b]), color, t, cv2.LINE_AA)
        for j in sorted({j for pair in finger for j in pair}):
            if found[j]:
                cv2.circle(canvas, _pt(kp[j]), t + 2, color, -1, cv2.LINE_AA)
    return canvas
