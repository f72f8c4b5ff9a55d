"""Face keypoints (70 points, OpenPose's face model) in a face box of a picture.

    python face_detector.py facenet models/facenet.npz --img data/face.png
    python face_detector.py facenet models/facenet.npz --img photo.jpg --box 120 40 200 200 \\
        --out faces.png --json face.json [--gpu 0] [--net-resolution 256]

Without ``--box`` the face box is the whole picture.  Writes the picture with the keypoints
drawn (``result.png`` unless ``--out``) and, with ``--json``, OpenPose's JSON
(``people[0].face_keypoints_2d``: 70 x, y, confidence triples).  Python API::

    detector = FaceDetector('models/facenet.npz')      # device=0 for GPU 0
    keypoints = detector(bgr_image, (x, y, w, h))       # (70, 3) x, y, score in the image
    cv2.imwrite('out.png', drawing.draw_face_keypoints(bgr_image, keypoints))

The box is cut out as a square (padded past the image border, never skipped), resized to
the net input (``face_inference_img_size``), the net's last-stage maps are upsampled back to
the crop (at most to the net input size, at least to the net output size), and each keypoint
is the map's highest peak above ``face_heatmap_peak_thresh`` (sub-pixel refined); keypoints
below it are 0, 0, 0.  The face weights come from CMU's caffemodel:
``python convert_model.py facenet pose_iter_116000.caffemodel models/facenet.npz``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse

import numpy as np

import cli
import image_io
import keypoint_crops
from drawing import draw_box, draw_face_keypoints
from entity import JointType, params
from image_io import read_image
from keypoint_net import KeypointNetDetector, check_net_resolution

KIND_NAMES = {'facenet': 'face', 'handnet': 'hand'}


class FaceDetector(KeypointNetDetector):
    """``FaceDetector(weights_file, device=-1)(img, face_box)`` -> (70, 3) x, y, score."""
    arch = 'facenet'
    size_key, thresh_key, n_key = 'face_inference_img_size', 'face_heatmap_peak_thresh', \
        'face_n_keypoints'

    def __call__(self, img, face_box):
        return self.detect(img, face_box)


# ----------------------------------------------------------------------------- boxes

def face_box_from_pose(pose, thresh=None):
    """The face box (x, y, w, h) of one (18, 3) body pose, or None.

    As OpenPose's faceDetector.cpp: the average of the estimates that the joints scoring
    above ``thresh`` (``box_joint_thresh``) allow -- neck + nose (centre between them; a
    profile with one eye and ear uses those three points instead), both eyes, both ears --
    each a centre and a face size (``face_size_*``), the size enlarged by
    ``face_crop_scale``.  A square about the averaged centre, enlarged if needed so that the
    pose's nose, eyes and ears lie within its central 1 / ``face_crop_scale``.
    """
    thresh = params['box_joint_thresh'] if thresh is None else thresh
    pose = np.asarray(pose, np.float64)
    ok = pose[:, 2] > thresh
    pt = pose[:, :2]

    def dist(a, b):
        return float(np.hypot(*(pt[a] - pt[b])))

    estimates = []
    if ok[JointType.Neck] and ok[JointType.Nose]:
        l_side = ok[JointType.LEye] and ok[JointType.LEar]
        r_side = ok[JointType.REye] and ok[JointType.REar]
        profile = (ok[JointType.LEye] == ok[JointType.LEar]
                   and ok[JointType.REye] == ok[JointType.REar] and l_side != r_side)
        if profile:
            eye, ear = ((JointType.LEye, JointType.LEar) if l_side
                        else (JointType.REye, JointType.REar))
            centre = (pt[eye] + pt[ear] + pt[JointType.Nose]) / 3.0
            size = params['face_size_profile'] * (dist(JointType.Nose, eye)
                                                  + dist(JointType.Nose, ear)
                                                  + dist(JointType.Neck, JointType.Nose))
        else:
            centre = (pt[JointType.Neck] + pt[JointType.Nose]) / 2.0
            size = params['face_size_neck_nose'] * dist(JointType.Neck, JointType.Nose)
        estimates.append((centre, size))
    if ok[JointType.LEye] and ok[JointType.REye]:
        estimates.append(((pt[JointType.LEye] + pt[JointType.REye]) / 2.0,
                          params['face_size_eyes'] * dist(JointType.LEye, JointType.REye)))
    if ok[JointType.LEar] and ok[JointType.REar]:
        estimates.append(((pt[JointType.LEar] + pt[JointType.REar]) / 2.0,
                          params['face_size_ears'] * dist(JointType.LEar, JointType.REar)))
    if not estimates:
        return None
    centre = np.mean([c for c, _ in estimates], axis=0)
    side = np.mean([s for _, s in estimates]) * params['face_crop_scale']
    # OpenPose's box can cut off an ear of a turned head: enlarge it (about the same centre)
    # until every head joint the pose has (any score) lies within the box shrunk by
    # face_crop_scale.
    head = [JointType.Nose, JointType.LEye, JointType.REye, JointType.LEar, JointType.REar]
    head = [j for j in head if pose[j, 2] > 0]
    if head:
        reach = np.abs(pt[head] - centre).max()
        side = max(side, 2.0 * params['face_crop_scale'] * reach)
    if not side > 0:
        return None
    return (float(centre[0] - side / 2), float(centre[1] - side / 2), float(side), float(side))


# ----------------------------------------------------------------------------- CLI

def whole_image_box(img):
    return (0.0, 0.0, float(img.shape[1]), float(img.shape[0]))


def checked_box(box, img):
    """``--box`` for ``img``: the whole image when None, else a box with area that overlaps
    the image (one-line ``cli.UserError`` otherwise)."""
    if box is None:
        return whole_image_box(img)
    h, w = img.shape[:2]
    if not np.isfinite(box).all():
        raise cli.UserError('--box %s: the numbers must be finite'
                            % ' '.join('%g' % v for v in box))
    window = keypoint_crops.box_window(box)
    if window is None:
        raise cli.UserError('--box %s has no area (width and height must be at least 1 px)'
                            % ' '.join('%g' % v for v in box))
    x0, y0, x1, y1 = window
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise cli.UserError('--box %s lies outside the %dx%d image'
                            % (' '.join('%g' % v for v in box), w, h))
    return tuple(float(v) for v in box)


def keypoint_parser(arch, description):
    """The argparse parser shared by face_detector.py and hand_detector.py."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument('arch', choices=[arch], help='model architecture')
    p.add_argument('weights', help='weights file (.npz, made by convert_model.py %s; or .onnx '
                                   'from export_onnx.py with --backend onnx)' % arch)
    p.add_argument('--img', '-i', required=True, help='image file')
    p.add_argument('--box', type=float, nargs=4, metavar=('X', 'Y', 'W', 'H'),
                   help='the %s box in the image (default: the whole image)' % KIND_NAMES[arch])
    p.add_argument('--out', '-o', default='result.png', help='picture to write (result.png)')
    p.add_argument('--json', '-j', metavar='FILE', help="also write OpenPose-format JSON")
    p.add_argument('--net-resolution', type=int, metavar='N',
                   help='net input side, a multiple of 8 (default %d; smaller is faster)'
                        % params['face_inference_img_size' if arch == 'facenet'
                                 else 'hand_inference_img_size'])
    cli.add_device_arguments(p)
    return p


def check_cli_args(args):
    """Everything about face_detector.py's / hand_detector.py's arguments that can be
    checked before any work: the net resolution and the outputs."""
    check_net_resolution(args.net_resolution, '--net-resolution')
    image_io.check_outputs(args.out, args.json, [('--img', args.img), ('WEIGHTS', args.weights)])


def write_result(args, img, json_people):
    """Write ``args.out`` (and ``args.json``) atomically, after encoding everything."""
    import frame_loop
    image_io.write_outputs(args.out, img, args.json,
                  frame_loop.openpose_people(json_people) if args.json else None)


def main(argv=None):
    args = keypoint_parser('facenet', 'Face keypoints (70) in a face box.').parse_args(argv)
    check_cli_args(args)
    img = read_image(args.img)  # fail fast on a bad picture, before loading the net
    box = checked_box(args.box, img)
    detector = FaceDetector(args.weights, device=args.gpu, insize=args.net_resolution,
                            backend=args.backend)
    keypoints = detector(img, box)
    print('Found %d of %d face keypoints' % (int((keypoints[:, 2] > 0).sum()), len(keypoints)))
    drawn = draw_face_keypoints(img, keypoints)
    if args.box is not None:
        draw_box(drawn, box)
    write_result(args, drawn, [{'face': keypoints}])
    return 0


if __name__ == '__main__':
    cli.run_main(main)
