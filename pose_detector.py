"""Multi-person body pose estimation with Part Affinity Fields (Cao et al., CVPR'17).

    python pose_detector.py posenet models/coco_posenet.npz --img data/person.png [--gpu 0]
    python pose_detector.py --img data/000000000785.jpg          # embedded MobileNet model
    python pose_detector.py --img in.jpg --out out.png --json people.json --scales 1
    python pose_detector.py --img in.jpg --flip        # + the mirrored image (2x the forwards)

Writes the picture with the skeletons drawn (``result.png`` unless ``--out``) and, with
``--json``, the keypoints in OpenPose's JSON format.  Python API::

    detector = PoseDetector()                       # or PoseDetector('posenet', 'x.npz')
    poses, scores = detector(bgr_image)             # (N, 18, 3) x, y, score; (N,)
    cv2.imwrite('out.png', drawing.draw_person_pose(bgr_image, poses))
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse

import numpy as np

import body_maps
import cli
import frame_loop
import image_io
import paf_grouping
from drawing import draw_person_pose
from entity import params
from image_io import read_image
from models import default_weights
from net_runner import NetRunner


def check_arch(arch):
    """``arch`` if it is a body-pose architecture, else a one-line ``cli.UserError``."""
    if arch not in params['pose_archs']:
        raise cli.UserError('unknown body-pose architecture %r (known: %s)'
                            % (arch, ', '.join(sorted(params['pose_archs']))))
    return arch


def load_model(arch, weights_file, backend='chainer'):
    """The body net ``arch`` with ``weights_file`` loaded (``onnx_backend.load_net``: a
    Chainer npz, or for ``backend='onnx'`` the npz or an exported ONNX file); bad files give
    a one-line ``cli.UserError`` naming the file (and the layer)."""
    import onnx_backend
    return onnx_backend.load_net(check_arch(arch), weights_file, backend)


def check_scales(scales):
    """``scales`` as a list of floats, or a one-line ``cli.UserError``: at most
    ``max_inference_scales`` of them, each in (0, ``max_inference_scale``] (memory grows with
    the square of the largest).  None stays None (the default)."""
    if scales is None:
        return None
    scales = [float(s) for s in scales]
    top, most = params['max_inference_scale'], params['max_inference_scales']
    if not scales or not all(0 < s <= top for s in scales):  # NaN fails both
        raise cli.UserError('scales must be positive numbers up to %g (max_inference_scale), '
                            'got %s' % (top, ' '.join('%g' % s for s in scales)))
    if len(scales) > most:
        raise cli.UserError('at most %d scales (max_inference_scales), got %d'
                            % (most, len(scales)))
    return scales


class PoseDetector(NetRunner):
    """Body pose estimator: a PAF network, its maps over several scales (``body_maps``) and
    the PAF grouping (``paf_grouping``).

    ``arch`` is a key of ``entity.params['pose_archs']`` (default: the embedded
    ``default_pose_arch``); ``weights_file`` defaults to that arch's ``default_weights``.
    ``device`` -1 runs on the CPU, N >= 0 on GPU N (CuPy).  ``scales`` overrides
    ``inference_scales``.  ``model`` may be given instead of weights (an already built net).
    ``backend`` 'onnx' runs the net with onnxruntime (CPU; see onnx_backend.py).  ``flip``
    (default ``flip_test``) averages the maps with those of the mirrored image (twice the
    forwards).
    """

    def __init__(self, arch=None, weights_file=None, device=-1, scales=None, model=None,
                 backend='chainer', flip=None):
        self.arch = check_arch(arch or params['default_pose_arch'])
        self.scales = check_scales(params['inference_scales'] if scales is None else scales)
        self.flip = params['flip_test'] if flip is None else bool(flip)
        super().__init__(self.arch, weights_file or default_weights(self.arch), device,
                         backend, model)

    def forward(self, x):
        """Run the net on one preprocessed 1x3xHxW input; last stage's (pafs, heatmaps)."""
        pafs, heatmaps = self.run(x)
        return self.to_numpy(pafs[-1])[0], self.to_numpy(heatmaps[-1])[0]

    def compute_maps(self, img, smooth=True, lazy=False):
        """(heatmaps, pafs, scale_yx) averaged over ``self.scales``; heatmaps smoothed unless
        ``smooth`` is False; both ``lazy_maps.LazyMaps`` with ``lazy`` (see
        body_maps.compute_maps)."""
        return body_maps.compute_maps(img, self.forward, self.arch, self.scales, smooth, lazy,
                                      self.flip)

    def __call__(self, img):
        """BGR uint8 image -> (poses (N, 18, 3): x, y, score, missing joints 0, 0, 0;
        scores (N,)), people in the order the grouping found them."""
        img = np.asarray(img)
        if img.size == 0:
            raise cli.UserError('empty image of shape %s' % (img.shape,))
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            img = image_io.to_bgr8(img)
        heatmaps, pafs, scale_yx = self.compute_maps(img, lazy=True)  # smoothed
        poses, scores = paf_grouping.group_people(heatmaps, pafs, smooth=False)
        return body_maps.to_image_coords(poses, scale_yx), scores


def poses_to_openpose_json(poses, ids=None, raw=None):
    """OpenPose's JSON (``frame_loop.openpose_people``) for (N, 18, 3) poses: one
    ``pose_keypoints_2d`` list of 18 x, y, confidence triples per person (0, 0, 0 for a
    missing joint).  ``ids`` (N,): the tracking IDs written as ``person_id`` (default -1);
    ``raw`` (N, 18, 3): the detector's keypoints before smoothing, written as
    ``pose_keypoints_2d_raw``."""
    poses = np.asarray(poses, np.float64).reshape(-1, paf_grouping.N_JOINTS, 3)
    people = [{'pose': pose} for pose in poses]
    for n, person in enumerate(people):
        if ids is not None:
            person['id'] = ids[n]
        if raw is not None:
            person['pose_raw'] = np.asarray(raw, np.float64)[n]
    return frame_loop.openpose_people(people)


def add_flip_argument(parser):
    """``--flip`` / ``--no-flip`` (default ``flip_test``) for a script that runs PoseDetector."""
    parser.add_argument('--flip', action=argparse.BooleanOptionalAction, default=None,
                        help='also run the mirrored image and average the maps: a little '
                             'more accuracy for twice the network time (default: %s)'
                             % ('on' if params['flip_test'] else 'off'))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Multi-person pose estimation. With no ARCH/WEIGHTS the embedded %s model '
                    '(%s) is used.' % (params['default_pose_arch'],
                                       params['default_weights'][params['default_pose_arch']]))
    p.add_argument('arch', nargs='?', choices=sorted(params['pose_archs']),
                   help='model architecture (default: %s)' % params['default_pose_arch'])
    p.add_argument('weights', nargs='?', help="weights file (.npz, or .onnx with --backend "
                                             "onnx; default: the arch's own)")
    p.add_argument('--img', '-i', required=True, help='image file')
    p.add_argument('--out', '-o', default='result.png', help='picture to write (result.png)')
    p.add_argument('--json', '-j', metavar='FILE', help="also write OpenPose-format JSON")
    p.add_argument('--scales', type=float, nargs='+', metavar='S',
                   help='inference scales (default: %s)'
                        % ' '.join('%g' % s for s in params['inference_scales']))
    cli.add_device_arguments(p)
    add_flip_argument(p)
    p.add_argument('--precise', action='store_true',
                   help="accepted for the original's command lines; the multi-scale "
                        "evaluation is always on")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_scales(args.scales)
    image_io.check_outputs(args.out, args.json, [('--img', args.img), ('WEIGHTS', args.weights)])
    img = read_image(args.img)  # before loading the model: fail fast on a bad picture
    detector = PoseDetector(args.arch, args.weights, device=args.gpu, scales=args.scales,
                            backend=args.backend, flip=args.flip)
    poses, _ = detector(img)
    n = len(poses)
    print('Found %d %s in %s' % (n, 'person' if n == 1 else 'people', args.img))
    image_io.write_outputs(args.out, draw_person_pose(img, poses), args.json,
                  poses_to_openpose_json(poses) if args.json else None)
    return 0


if __name__ == '__main__':
    cli.run_main(main)
