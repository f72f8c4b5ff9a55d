"""Real-time face keypoints on a webcam, a video file or a folder of images.

    python camera_face_demo.py                          # webcam 0, quit with q or Esc
    python camera_face_demo.py --video in.mp4 --out annotated.mp4 --json-dir faces/

Faces are found by OpenCV's Haar cascade (``haarcascade_frontalface_alt.xml``,
shipped with OpenCV in ``cv2.data.haarcascades``); each box, enlarged by
``face_crop_scale``, goes through the face net (70 keypoints).  Same inputs,
outputs and flags as camera_pose_demo.py (the loop is ``frame_loop.py``).
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import os

import cv2
import numpy as np

import cli
import frame_loop
from entity import params
from models import convert_command, default_weights


def build_parser():
    parser = argparse.ArgumentParser(
        description='Face keypoint detection on a camera, a video file or a folder of images.')
    frame_loop.add_arguments(parser)
    frame_loop.add_tracking_arguments(parser, 'faces')
    parser.add_argument('--weights', metavar='NPZ', default=None,
                        help='face net weights (default: %s)' % params['default_weights']['facenet'])
    parser.add_argument('--cascade', metavar='XML', default=None,
                        help='OpenCV Haar cascade for face boxes (default: %s from '
                        'cv2.data.haarcascades)' % params['face_cascade_file'])
    parser.add_argument('--net-resolution', type=int, default=None, metavar='N',
                        help='face net input side, a multiple of 8 (default %d; smaller is '
                        'faster)' % params['face_inference_img_size'])
    cli.add_device_arguments(parser)
    return parser


def load_cascade(path=None):
    """The Haar face cascade: ``path``, else the one OpenCV ships."""
    if not hasattr(cv2, 'CascadeClassifier'):  # OpenCV 5 moved it to opencv-contrib
        raise cli.UserError('OpenCV %s has no Haar cascades (cv2.CascadeClassifier): pip install '
                            'opencv-contrib-python-headless==%s, or OpenCV 4.x'
                            % (cv2.__version__, cv2.__version__))
    if path is None:
        base = getattr(getattr(cv2, 'data', None), 'haarcascades', None)
        if not base:
            raise cli.UserError('this OpenCV has no cv2.data.haarcascades: pass --cascade FILE '
                                '(%s)' % params['face_cascade_file'])
        path = os.path.join(base, params['face_cascade_file'])
    if not os.path.isfile(path):
        raise cli.UserError('%s: Haar cascade file not found' % path)
    try:
        cascade = cv2.CascadeClassifier(path)
    except (cv2.error, SystemError):  # OpenCV raises on a file it cannot parse
        cascade = None
    if cascade is None or cascade.empty():
        raise cli.UserError('%s: not an OpenCV cascade file' % path)
    return cascade


def detect_face_rects(cascade, img):
    """Face rectangles (x, y, w, h) found by the cascade, as an (N, 4) int array."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    rects = cascade.detectMultiScale(gray, scaleFactor=params['face_cascade_scale_factor'],
                                     minNeighbors=params['face_cascade_min_neighbors'],
                                     minSize=tuple(params['face_cascade_min_size']))
    return np.asarray(rects, np.int64).reshape(-1, 4)


def face_crop_box(rect):
    """The box (x, y, w, h) the face net sees: the cascade's box enlarged about its centre by
    ``face_crop_scale``, as the original demo crops (may reach past the image border)."""
    x, y, w, h = [float(v) for v in rect]
    s = params['face_crop_scale']
    cx, cy = x + w / 2.0, y + h / 2.0
    return (cx - w * s / 2.0, cy - h * s / 2.0, w * s, h * s)


def face_process(cascade, detector, track=True, smooth=True):
    """The frame callback: face boxes and keypoints drawn, OpenPose JSON (one entry per face).

    ``track``: each face's ID drawn and written as ``person_id``; ``smooth``: the cascade's
    boxes smoothed over time (the face net then sees a steady crop).  Boxes are tracked as
    their two corners by the body tracker (pose_tracker.PoseTracker).
    """
    from drawing import draw_box, draw_face_keypoints, draw_person_ids

    tracker = None
    if track or smooth:
        from pose_tracker import PoseTracker
        tracker = PoseTracker(sigmas=[params['track_face_box_sigma']] * 2, smooth=smooth)

    def process(frame, t):
        annotated = frame.copy()
        people = []
        rects = detect_face_rects(cascade, frame).astype(np.float64)
        ids = np.full(len(rects), -1)
        if tracker is not None:
            corners = np.ones((len(rects), 2, 3))
            corners[:, 0, :2], corners[:, 1, :2] = rects[:, :2], rects[:, :2] + rects[:, 2:]
            ids, corners = tracker.update(corners, t)
            rects = np.concatenate([corners[:, 0, :2], corners[:, 1, :2] - corners[:, 0, :2]], 1)
            if not track:
                ids[:] = -1
        for rect, face_id in zip(rects, ids.tolist()):
            keypoints = detector(frame, face_crop_box(rect))
            draw_box(annotated, rect)  # the cascade's box, white, as the original
            annotated = draw_face_keypoints(annotated, keypoints)
            people.append({'face': keypoints, 'id': face_id})
        # the ID above each box's top-left corner
        draw_person_ids(annotated, np.c_[rects[:, :2], np.ones(len(rects))][:, None, :], ids)
        return annotated, frame_loop.openpose_people(people)
    return process


def main(argv=None):
    args = build_parser().parse_args(argv)
    from keypoint_net import check_net_resolution
    check_net_resolution(args.net_resolution, '--net-resolution')
    cascade = load_cascade(args.cascade)
    weights = args.weights if args.weights is not None else default_weights('facenet')
    if not os.path.isfile(weights):
        # checked before the source is opened and Chainer imported
        raise cli.UserError('%s: face net weights not found (make them with: %s; or pass '
                            '--weights FILE)' % (weights, convert_command('facenet', weights)))

    def make_process():
        from face_detector import FaceDetector
        return face_process(cascade, FaceDetector(weights, device=args.gpu,
                                                  insize=args.net_resolution,
                                                  backend=args.backend), args.track, args.smooth)

    return frame_loop.run_from_args(args, make_process, label='faces',
                                    inputs=[('--weights', weights), ('--cascade', args.cascade)])


if __name__ == '__main__':
    cli.run_main(main)
