"""Real-time body poses on a webcam, a video file or a folder of images.

    python camera_pose_demo.py                          # webcam 0, quit with q or Esc
    python camera_pose_demo.py --video in.mp4 --out annotated.mp4 --json-dir poses/
    python camera_pose_demo.py --images frames/ --no-display --json-dir poses/

Defaults to the embedded MobileNet model at a single scale (``demo_scales``) for
speed; ``--arch posenet --weights models/coco_posenet.npz`` runs the CMU net.
The frame loop (sources, display, outputs, summary) is ``frame_loop.py``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse

import cli
import frame_loop
from entity import params
from pose_detector import add_flip_argument


def build_parser():
    parser = argparse.ArgumentParser(
        description='Body pose detection on a camera, a video file or a folder of images.')
    frame_loop.add_arguments(parser)
    frame_loop.add_tracking_arguments(parser)
    parser.add_argument('--arch', choices=sorted(params['pose_archs']), default=None,
                        help='body network (default: %s, the embedded model)'
                        % params['default_pose_arch'])
    parser.add_argument('--weights', metavar='NPZ', default=None,
                        help="weights of --arch (default: the arch's file in models/)")
    cli.add_device_arguments(parser)
    add_flip_argument(parser)
    parser.add_argument('--scales', type=float, nargs='+', default=None, metavar='S',
                        help='inference scales (default: %s; the still-image default is %s)'
                        % (' '.join('%g' % s for s in params['demo_scales']),
                           ' '.join('%g' % s for s in params['inference_scales'])))
    return parser


def pose_process(detector, track=True, smooth=True):
    """The frame callback: poses drawn on the frame, and OpenPose JSON (one entry per person).

    ``track``: each person's ID drawn and written as ``person_id``; ``smooth``: the drawn and
    written keypoints are smoothed over time, the raw ones written as
    ``pose_keypoints_2d_raw`` (both need the tracker, which follows people from frame to
    frame by the frames' timestamps).
    """
    from drawing import draw_person_ids, draw_person_pose
    from pose_detector import poses_to_openpose_json

    if not (track or smooth):
        def process(frame):
            poses, _scores = detector(frame)
            return draw_person_pose(frame, poses), poses_to_openpose_json(poses)
        return process

    from pose_tracker import PoseTracker
    tracker = PoseTracker(smooth=smooth)

    def process(frame, t):
        poses, scores = detector(frame)
        ids, shown = tracker.update(poses, t, scores)
        canvas = draw_person_pose(frame, shown)
        if track:
            draw_person_ids(canvas, shown, ids)
        return canvas, poses_to_openpose_json(shown, ids if track else None,
                                              raw=poses if smooth else None)
    return process


def main(argv=None):
    args = build_parser().parse_args(argv)
    from pose_detector import check_scales
    check_scales(args.scales)

    def make_process():
        from pose_detector import PoseDetector
        scales = args.scales if args.scales is not None else params['demo_scales']
        return pose_process(PoseDetector(args.arch, args.weights, device=args.gpu, scales=scales,
                                         backend=args.backend, flip=args.flip), args.track, args.smooth)

    return frame_loop.run_from_args(args, make_process, label='people',
                                    inputs=[('--weights', args.weights)])


if __name__ == '__main__':
    cli.run_main(main)
