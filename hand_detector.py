"""Hand keypoints (21 points, OpenPose's hand model) in a hand box of a picture.

    python hand_detector.py handnet models/handnet.npz --img data/hand.png
    python hand_detector.py handnet models/handnet.npz --img photo.jpg --box 300 200 120 120 \\
        --hand left --out hands.png --json hand.json [--gpu 0] [--net-resolution 256]

Without ``--box`` the hand box is the whole picture; ``--hand`` says which hand it is
(default right, as the original's command).  Writes the picture with the fingers drawn
(``result.png`` unless ``--out``) and, with ``--json``, OpenPose's JSON
(``hand_right_keypoints_2d`` or ``hand_left_keypoints_2d``: 21 x, y, confidence triples).
Python API::

    detector = HandDetector('models/handnet.npz')            # device=0 for GPU 0
    keypoints = detector(bgr_image, (x, y, w, h), 'left')    # (21, 3) x, y, score
    cv2.imwrite('out.png', drawing.draw_hand_keypoints(bgr_image, keypoints))

The hand net was trained on right hands: a left hand's crop goes through it mirrored and the
maps are mirrored back (``hand_mirrored_side``, as OpenPose).  Otherwise as face_detector.py.
The weights come from CMU's caffemodel: ``python convert_model.py handnet
pose_iter_102000.caffemodel models/handnet.npz``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import numpy as np

import cli
from drawing import draw_box, draw_hand_keypoints
from entity import JointType, params
from face_detector import check_cli_args, checked_box, keypoint_parser, write_result
from image_io import read_image
from keypoint_net import KeypointNetDetector

HAND_TYPES = ('left', 'right')


class HandDetector(KeypointNetDetector):
    """``HandDetector(weights_file, device=-1)(img, hand_box, hand_type)`` -> (21, 3)."""
    arch = 'handnet'
    size_key, thresh_key, n_key = 'hand_inference_img_size', 'hand_heatmap_peak_thresh', \
        'hand_n_keypoints'

    def __call__(self, img, hand_box, hand_type='right'):
        if hand_type not in HAND_TYPES:
            raise cli.UserError("hand_type must be 'left' or 'right', got %r" % (hand_type,))
        return self.detect(img, hand_box, mirror=hand_type == params['hand_mirrored_side'])


def hand_boxes_from_pose(pose, thresh=None):
    """{'left': box or None, 'right': box or None} for one (18, 3) body pose.

    As OpenPose's handDetector.cpp: a square centred on the wrist moved on by
    ``hand_box_wrist_extension`` of the elbow->wrist vector, side ``hand_box_scale`` *
    max(forearm, ``hand_box_upper_arm_ratio`` * upper arm).  Needs wrist and elbow scoring
    above ``thresh`` (``box_joint_thresh``); without the shoulder the forearm alone sets the
    size (OpenPose gives up there).
    """
    thresh = params['box_joint_thresh'] if thresh is None else thresh
    pose = np.asarray(pose, np.float64)
    ok = pose[:, 2] > thresh
    boxes = {}
    for side, (shoulder, elbow, wrist) in (
            ('left', (JointType.LShoulder, JointType.LElbow, JointType.LWrist)),
            ('right', (JointType.RShoulder, JointType.RElbow, JointType.RWrist))):
        boxes[side] = None
        if not (ok[wrist] and ok[elbow]):
            continue
        forearm = pose[wrist, :2] - pose[elbow, :2]
        length = float(np.hypot(*forearm))
        if ok[shoulder]:
            upper = float(np.hypot(*(pose[elbow, :2] - pose[shoulder, :2])))
            length = max(length, params['hand_box_upper_arm_ratio'] * upper)
        size = params['hand_box_scale'] * length
        if not size > 0:
            continue
        centre = pose[wrist, :2] + params['hand_box_wrist_extension'] * forearm
        boxes[side] = (float(centre[0] - size / 2), float(centre[1] - size / 2),
                       float(size), float(size))
    return boxes


def main(argv=None):
    p = keypoint_parser('handnet', 'Hand keypoints (21) in a hand box.')
    p.add_argument('--hand', choices=HAND_TYPES, default='right',
                   help='which hand the box holds (default: right)')
    args = p.parse_args(argv)
    check_cli_args(args)
    img = read_image(args.img)  # fail fast on a bad picture, before loading the net
    box = checked_box(args.box, img)
    detector = HandDetector(args.weights, device=args.gpu, insize=args.net_resolution,
                            backend=args.backend)
    keypoints = detector(img, box, args.hand)
    print('Found %d of %d %s-hand keypoints'
          % (int((keypoints[:, 2] > 0).sum()), len(keypoints), args.hand))
    drawn = draw_hand_keypoints(img, keypoints)
    if args.box is not None:
        draw_box(drawn, box)
    write_result(args, drawn, [{'hand_' + args.hand: keypoints}])
    return 0


if __name__ == '__main__':
    cli.run_main(main)
