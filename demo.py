"""Body, face and hand keypoints of every person in a picture, in one pass.

    python demo.py --img data/dinner.png
    python demo.py --img photo.jpg --json people.json --out annotated.png
    python demo.py --img photo.jpg --pose-arch posenet --pose-weights models/coco_posenet.npz \\
        --face-weights models/facenet.npz --hand-weights models/handnet.npz [--gpu 0]

The body poses come from ``pose_detector.PoseDetector`` (default: the embedded MobileNet
model); each person's face box is derived from the nose, eyes, ears and neck, each hand box
from the elbow->wrist direction (``face_detector.face_box_from_pose``,
``hand_detector.hand_boxes_from_pose``, as OpenPose), and the face and hand nets run on those
boxes.  Writes ``result.png`` (``--out``) and, with ``--json``, one OpenPose-style JSON:
``people[].pose_keypoints_2d`` (18 x, y, c), ``face_keypoints_2d`` (70), ``hand_left_keypoints_2d``
and ``hand_right_keypoints_2d`` (21 each); a part whose box could not be derived is all
zeros, a part whose net did not run is [].

Without the default face / hand weights (``models/facenet.npz``, ``models/handnet.npz``, made
by ``convert_model.py`` from CMU's caffemodels) the body part still runs, and one line says
which file is missing and how to make it.  A weights file given explicitly must exist.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import os
import sys

import numpy as np

import cli
import frame_loop
import image_io
import pose_detector
from drawing import draw_box, draw_face_keypoints, draw_hand_keypoints, draw_person_pose
from entity import params
from face_detector import FaceDetector, face_box_from_pose
from hand_detector import HandDetector, hand_boxes_from_pose
from image_io import read_image
from keypoint_net import check_net_resolution
from models import convert_command, default_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Body, face and hand keypoints of every person in a picture.')
    p.add_argument('--img', '-i', required=True, help='image file')
    p.add_argument('--pose-arch', choices=sorted(params['pose_archs']),
                   default=params['default_pose_arch'],
                   help='body-pose architecture (default: %s)' % params['default_pose_arch'])
    p.add_argument('--pose-weights', metavar='NPZ',
                   help="body weights (default: the arch's own, %s for %s)"
                        % (params['default_weights'][params['default_pose_arch']],
                           params['default_pose_arch']))
    p.add_argument('--face-weights', metavar='NPZ',
                   help='face net weights (default: %s; faces skipped when absent)'
                        % params['default_weights']['facenet'])
    p.add_argument('--hand-weights', metavar='NPZ',
                   help='hand net weights (default: %s; hands skipped when absent)'
                        % params['default_weights']['handnet'])
    p.add_argument('--no-face', action='store_true', help='skip the face net')
    p.add_argument('--no-hands', action='store_true', help='skip the hand net')
    p.add_argument('--out', '-o', default='result.png', help='picture to write (result.png)')
    p.add_argument('--json', '-j', metavar='FILE', help='also write OpenPose-format JSON')
    p.add_argument('--scales', type=float, nargs='+', metavar='S',
                   help='body inference scales (default: %s)'
                        % ' '.join('%g' % s for s in params['inference_scales']))
    p.add_argument('--face-net-resolution', type=int, metavar='N',
                   help='face net input side, multiple of 8 (default %d)'
                        % params['face_inference_img_size'])
    p.add_argument('--hand-net-resolution', type=int, metavar='N',
                   help='hand net input side, multiple of 8 (default %d)'
                        % params['hand_inference_img_size'])
    cli.add_device_arguments(p)
    pose_detector.add_flip_argument(p)
    return p.parse_args(argv)


def part_detector(cls, arch, weights, skip, device, insize, backend='chainer'):
    """The face/hand detector, or (None, missing default weights path) when the default
    weights file is absent.  An explicitly given file that is missing is an error."""
    if skip:
        return None, None
    if weights is None:
        path = default_weights(arch)
        if not os.path.exists(path):
            return None, params['default_weights'][arch]
        weights = path
    return cls(weights, device=device, insize=insize, backend=backend), None


def missing_weights_note(missing):
    """One line naming the absent default weights files and the commands that make them."""
    kinds = {'facenet': 'faces', 'handnet': 'hands'}
    return ('note: %s not found: %s skipped (make %s with: %s)'
            % (' and '.join(path for _, path in missing),
               ' and '.join(kinds[arch] for arch, _ in missing),
               'them' if len(missing) > 1 else 'it',
               '; '.join(convert_command(arch, path) for arch, path in missing)))


def detect_people(img, body, face=None, hand=None):
    """Body poses plus faces and hands: a list of dicts (``pose``, ``face``, ``hand_left``,
    ``hand_right``: (K, 3) arrays or None when that net is off; ``face_box``,
    ``hand_left_box``, ``hand_right_box``: (x, y, w, h) or None)."""
    poses, _ = body(img)
    people = []
    for pose in poses:
        person = {'pose': pose}
        if face is not None:
            box = face_box_from_pose(pose)
            person['face_box'] = box
            person['face'] = (face(img, box) if box is not None
                              else np.zeros((params['face_n_keypoints'], 3)))
        if hand is not None:
            boxes = hand_boxes_from_pose(pose)
            for side in ('left', 'right'):
                box = boxes[side]
                person['hand_%s_box' % side] = box
                person['hand_' + side] = (hand(img, box, side) if box is not None
                                          else np.zeros((params['hand_n_keypoints'], 3)))
        people.append(person)
    return people


def draw_people(img, people):
    """Skeletons, face and hand boxes (white) and keypoints on a copy of ``img``."""
    canvas = draw_person_pose(img, [p['pose'] for p in people])
    for person in people:
        for key in ('face_box', 'hand_left_box', 'hand_right_box'):
            draw_box(canvas, person.get(key))
        if person.get('face') is not None:
            canvas = draw_face_keypoints(canvas, person['face'])
        for side in ('left', 'right'):
            if person.get('hand_' + side) is not None:
                canvas = draw_hand_keypoints(canvas, person['hand_' + side])
    return canvas


def main(argv=None):
    args = parse_args(argv)
    pose_detector.check_scales(args.scales)
    check_net_resolution(args.face_net_resolution, '--face-net-resolution')
    check_net_resolution(args.hand_net_resolution, '--hand-net-resolution')
    image_io.check_outputs(args.out, args.json, [
        ('--img', args.img), ('--pose-weights', args.pose_weights),
        ('--face-weights', args.face_weights), ('--hand-weights', args.hand_weights)])
    img = read_image(args.img)  # fail fast on a bad picture, before loading any net
    body = pose_detector.PoseDetector(args.pose_arch, args.pose_weights, device=args.gpu,
                                      scales=args.scales, backend=args.backend, flip=args.flip)
    face, no_face = part_detector(FaceDetector, 'facenet', args.face_weights, args.no_face,
                                  args.gpu, args.face_net_resolution, args.backend)
    hand, no_hand = part_detector(HandDetector, 'handnet', args.hand_weights, args.no_hands,
                                  args.gpu, args.hand_net_resolution, args.backend)
    missing = [(arch, path) for arch, path in (('facenet', no_face), ('handnet', no_hand))
               if path]
    if missing:
        print(missing_weights_note(missing), file=sys.stderr)
    people = detect_people(img, body, face, hand)
    n = len(people)
    print('Found %d %s in %s' % (n, 'person' if n == 1 else 'people', args.img))
    json_obj = None
    if args.json:
        json_obj = frame_loop.openpose_people(
            [dict((k, p.get(k)) for k in ('pose', 'face', 'hand_left', 'hand_right'))
             for p in people])
    image_io.write_outputs(args.out, draw_people(img, people), args.json, json_obj)
    return 0


if __name__ == '__main__':
    cli.run_main(main)
