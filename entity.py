"""Every parameter of the project in one place.

Joint and limb definitions, training / inference / face / hand parameters and
the registry of network architectures.  Nothing else in the repository defines
these numbers: import them from here.
"""
from enum import IntEnum


class JointType(IntEnum):
    """The 18 body parts of the CMU COCO model, in heatmap-channel order."""
    Nose = 0
    Neck = 1
    RShoulder = 2
    RElbow = 3
    RWrist = 4
    LShoulder = 5
    LElbow = 6
    LWrist = 7
    RHip = 8
    RKnee = 9
    RAnkle = 10
    LHip = 11
    LKnee = 12
    LAnkle = 13
    REye = 14
    LEye = 15
    REar = 16
    LEar = 17


J = JointType

params = {
    # Architectures: name -> "module:Class" (resolved lazily by models.get_model_class,
    # so importing entity does not import Chainer).
    'archs': {
        'posenet': 'models.CocoPoseNet:CocoPoseNet',
        'facenet': 'models.FaceNet:FaceNet',
        'handnet': 'models.HandNet:HandNet',
        'mobilenet': 'models.MobileNetV2PoseNet:MobileNetV2PoseNet',
    },
    # Body-pose architectures and how their input is prepared.
    #   norm 'caffe': x / 256 - 0.5 on BGR uint8 (CMU nets); 'raw': BGR 0..255 as float.
    #   pad_multiple: the padded input's H and W are multiples of this.
    #   pad_value: the BGR value used for padding (CMU: 128 grey).
    'pose_archs': {
        'posenet': {'norm': 'caffe', 'stride': 8, 'pad_multiple': 8, 'pad_value': 128},
        'mobilenet': {'norm': 'raw', 'stride': 8, 'pad_multiple': 16, 'pad_value': 0},
    },
    # The embedded, shipped, COCO-trained model (see models/README.md).
    'default_pose_arch': 'mobilenet',
    'default_weights': {
        'mobilenet': 'models/mobilenet_v2_small.npz',
        'posenet': 'models/coco_posenet.npz',
        'facenet': 'models/facenet.npz',
        'handnet': 'models/handnet.npz',
    },

    'coco_dir': 'coco',

    # training params
    'min_keypoints': 5,
    'min_area': 32 * 32,
    'insize': 368,
    'downscale': 8,
    'paf_sigma': 8,
    'heatmap_sigma': 7,

    'min_box_size': 64,
    'max_box_size': 512,
    'min_scale': 0.5,
    'max_scale': 2.0,
    'max_rotate_degree': 40,
    'center_perterb_max': 40,
    # ignore masks are dilated by this many input pixels before going to the output grid
    'ignore_mask_dilate': 16,
    # optimisation (train_coco_pose_estimation.py): Adam alpha, divided by 10 at these
    # fractions of --iteration (100k and 200k of the original 300k)
    'train_alpha': 1e-4,
    'train_alpha_steps': (1 / 3, 2 / 3),
    'train_batchsize': 10,
    'train_iterations': 300000,
    'snapshot_interval': 1000,
    'val_samples': 100,
    'val_batchsize': 4,
    # CocoPoseNet: the VGG-19 front is frozen for this many iterations, then trained with its
    # gradients scaled by vgg_grad_scale (the original's schedule)
    'vgg_freeze_iterations': 2000,
    'vgg_grad_scale': 0.25,
    # used by train_coco_pose_estimation.py --arch posenet when --initmodel is not given and
    # this file exists (convert_model.py vgg19 VGG_ILSVRC_19_layers.caffemodel models/vgg19.npz)
    'vgg19_weights': 'models/vgg19.npz',
    # ... or else this one, read directly (the original README's `wget -P models`)
    'vgg19_caffemodel': 'models/VGG_ILSVRC_19_layers.caffemodel',

    # GPU convolutions (models/_gpu.py): the precision of their GEMMs, --precision on the
    # scripts with --gpu (fp32 exact; tf32 tensor cores; bf16/fp16 16-bit operands, float32
    # accumulation)
    'gpu_precisions': ('fp32', 'tf32', 'bf16', 'fp16'),
    'gpu_precision': 'tf32',

    # inference params
    'inference_img_size': 368,
    'inference_scales': [0.5, 1, 1.5, 2],
    'heatmap_size': 320,
    'gaussian_sigma': 2.5,
    'ksize': 17,
    'n_integ_points': 10,
    # A limb needs n_integ_points_thresh of its samples projecting above inner_product_thresh
    # on it; peaks lie above heatmap_peak_thresh.  Chosen by leave-one-image-out
    # cross-validation over every annotated image (bench/bench_accuracy.py --cv; the
    # original's 8 (then > 8), 0.05 and 0.05 missed weak joints and limbs).  The projection
    # threshold is 0.02, not the cross-validation's 0.0 (the same AP within noise): at 0.0 limbs
    # formed along near-perpendicular PAFs and video keypoints jumped between candidates
    # (track_eval's pan: 3.5x the raw frame-to-frame jitter).
    'n_integ_points_thresh': 7,
    'heatmap_peak_thresh': 0.02,
    # Peaks kept per part (the strongest): bounds grouping time and memory on noisy maps
    # (OpenPose keeps at most POSE_MAX_PEOPLE = 127 per part).
    'max_peaks_per_part': 127,
    'inner_product_thresh': 0.02,
    'limb_length_ratio': 1.0,
    'length_penalty_value': 1,
    'n_subset_limbs_thresh': 3,
    'subset_score_thresh': 0.2,
    # Limbs 9 and 13 (shoulder -> ear) duplicate the face chain: they never start a new
    # person in the grouping and are not drawn (as in the original).
    'redundant_limbs': [9, 13],
    # The net's input keeps the image's aspect ratio, but its longer side is capped at
    # this many times the shorter-side target (a 1x10000 strip must not become 368x3.7M).
    'inference_max_aspect': 4.0,

    # --- accuracy: defaults measured with bench/bench_accuracy.py (README: COCO evaluation) ---
    # Flip averaging at test time (--flip): each net input also runs mirrored, its maps are
    # un-mirrored and averaged with the direct ones.  Twice the forwards.
    'flip_test': False,
    # Peaks of one joint closer than this (working-resolution pixels) to a higher one are
    # dropped (paf_grouping.suppress_close_peaks); 0 keeps all.
    'peak_nms_radius': 5,
    # Sub-pixel keypoints: each peak moves to the vertex of the parabola through it and its
    # two neighbours along x and along y ('quadratic'), or stays on the pixel (None).
    'peak_subpixel': 'quadratic',
    # The score each person is ranked by (paf_grouping.person_scores): 'total' (the original's
    # sum of joint and limb scores), 'coco17' (mean peak score over COCO's 17 keypoints,
    # missing ones 0, times the mean limb score).
    'person_score': 'coco17',
    # Duplicate people: a person whose keypoints match a better-scored person's with an OKS
    # (over its own keypoints, COCO's sigmas) above this is dropped; None keeps all.
    'oks_nms_thresh': 0.5,
    # COCO's per-keypoint OKS sigmas (COCO order), the Neck taking the shoulders'.
    'coco_keypoint_sigmas': [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                             .107, .107, .087, .087, .089, .089],
    'neck_sigma': .079,

    # The 19 limbs in PAF-channel order: limb i uses PAF channels 2i (x) and 2i+1 (y),
    # pointing from the first joint to the second.
    'limbs_point': [
        [J.Neck, J.RHip],
        [J.RHip, J.RKnee],
        [J.RKnee, J.RAnkle],
        [J.Neck, J.LHip],
        [J.LHip, J.LKnee],
        [J.LKnee, J.LAnkle],
        [J.Neck, J.RShoulder],
        [J.RShoulder, J.RElbow],
        [J.RElbow, J.RWrist],
        [J.RShoulder, J.REar],
        [J.Neck, J.LShoulder],
        [J.LShoulder, J.LElbow],
        [J.LElbow, J.LWrist],
        [J.LShoulder, J.LEar],
        [J.Neck, J.Nose],
        [J.Nose, J.REye],
        [J.Nose, J.LEye],
        [J.REye, J.REar],
        [J.LEye, J.LEar],
    ],

    # 18 -> 17 mapping: COCO keypoint k (COCO order: nose, l/r eye, l/r ear, l/r shoulder,
    # l/r elbow, l/r wrist, l/r hip, l/r knee, l/r ankle) is our joint coco_joint_indices[k].
    # The Neck has no COCO keypoint (training uses the shoulders' midpoint).
    'coco_joint_indices': [
        J.Nose,
        J.LEye,
        J.REye,
        J.LEar,
        J.REar,
        J.LShoulder,
        J.RShoulder,
        J.LElbow,
        J.RElbow,
        J.LWrist,
        J.RWrist,
        J.LHip,
        J.RHip,
        J.LKnee,
        J.RKnee,
        J.LAnkle,
        J.RAnkle,
    ],
    # Left/right pairs swapped by a horizontal flip.
    'flip_joint_pairs': [
        (J.RShoulder, J.LShoulder), (J.RElbow, J.LElbow), (J.RWrist, J.LWrist),
        (J.RHip, J.LHip), (J.RKnee, J.LKnee), (J.RAnkle, J.LAnkle),
        (J.REye, J.LEye), (J.REar, J.LEar),
    ],

    # face params
    'face_inference_img_size': 368,
    'face_heatmap_peak_thresh': 0.1,
    'face_crop_scale': 1.5,
    'face_line_indices': [
        [0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 8], [8, 9], [9, 10],
        [10, 11], [11, 12], [12, 13], [13, 14], [14, 15], [15, 16],  # jaw line
        [17, 18], [18, 19], [19, 20], [20, 21],  # right eyebrow
        [22, 23], [23, 24], [24, 25], [25, 26],  # left eyebrow
        [27, 28], [28, 29], [29, 30],  # nose bridge
        [31, 32], [32, 33], [33, 34], [34, 35],  # nostrils
        [36, 37], [37, 38], [38, 39], [39, 40], [40, 41], [41, 36],  # right eye
        [42, 43], [43, 44], [44, 45], [45, 46], [46, 47], [47, 42],  # left eye
        [48, 49], [49, 50], [50, 51], [51, 52], [52, 53], [53, 54], [54, 55], [55, 56],
        [56, 57], [57, 58], [58, 59], [59, 48],  # outer lips
        [60, 61], [61, 62], [62, 63], [63, 64], [64, 65], [65, 66], [66, 67], [67, 60],  # inner lips
    ],
    'face_n_keypoints': 70,

    # hand params
    'hand_inference_img_size': 368,
    'hand_heatmap_peak_thresh': 0.1,
    'fingers_indices': [
        [[0, 1], [1, 2], [2, 3], [3, 4]],
        [[0, 5], [5, 6], [6, 7], [7, 8]],
        [[0, 9], [9, 10], [10, 11], [11, 12]],
        [[0, 13], [13, 14], [14, 15], [15, 16]],
        [[0, 17], [17, 18], [18, 19], [19, 20]],
    ],
    'hand_n_keypoints': 21,
    # The hand net was trained on right hands: left-hand crops are mirrored before the net and
    # the maps mirrored back (OpenPose's handExtractorCaffe; the original also flips the left).
    'hand_mirrored_side': 'left',

    # Face / hand crops (face_detector.py, hand_detector.py, demo.py).  A box is cut out as a
    # square (the shorter side padded bottom/right), parts past the image border filled with
    # this BGR value (OpenPose: black), resized to the net input.
    'crop_pad_value': 0,
    # boxes larger than this many times the image's longer side are refused (all padding)
    'crop_max_box_factor': 4.0,
    # Boxes from the body pose use joints scoring above this.  OpenPose uses 0.25 for its
    # own net; the embedded model's 4-scale averaged scores are lower: on coco_mini's people
    # with a labelled wrist, 0.25 gave 5 hand boxes and 0.1 gave 10, each holding its GT
    # wrist (and every face box its GT nose/eyes/ears) at both.
    'box_joint_thresh': 0.1,
    # Face size estimates from the body pose (tight face; times face_crop_scale = 1.5 they are
    # OpenPose's faceDetector.cpp rectangles): neck-nose distance, eye-eye, ear-ear and, for a
    # profile (one eye and ear), the sum of nose-eye, nose-ear and neck-nose distances.
    'face_size_neck_nose': 2.0 / 1.5,
    'face_size_eyes': 3.0 / 1.5,
    'face_size_ears': 2.0 / 1.5,
    'face_size_profile': 0.85 / 1.5,
    # Hand boxes from the body pose (OpenPose handDetector.cpp): square, centred on the wrist
    # moved by this fraction of elbow->wrist, side hand_box_scale * max(forearm,
    # hand_box_upper_arm_ratio * upper arm).
    'hand_box_wrist_extension': 0.33,
    'hand_box_scale': 1.5,
    'hand_box_upper_arm_ratio': 0.9,
    # CMU caffemodels that convert_model.py turns into the face / hand npz (OpenPose's
    # models/getModels.sh downloads them).
    'face_caffemodel': 'pose_iter_116000.caffemodel',
    'hand_caffemodel': 'pose_iter_102000.caffemodel',
    'pose_caffemodel': 'pose_iter_440000.caffemodel',  # CMU COCO body model -> posenet

    # real-time demos (camera_pose_demo.py, camera_face_demo.py, frame_loop.py)
    'camera_frame_size': (640, 480),  # (width, height) asked of the camera, as the original
    'demo_scales': [1.0],  # one inference scale: speed over the four-scale accuracy
    'demo_out_fps': 10.0,  # --out frame rate when the input has none (camera, image folder)
    # OpenCV Haar cascade (shipped in cv2.data.haarcascades) and the original's detectMultiScale args
    'face_cascade_file': 'haarcascade_frontalface_alt.xml',
    'face_cascade_scale_factor': 1.2,
    'face_cascade_min_neighbors': 3,
    'face_cascade_min_size': (1, 1),

    # Video: persistent person IDs and keypoint smoothing (pose_tracker.py; the camera demos'
    # --track/--smooth).
    # COCO's per-keypoint OKS sigmas (pycocotools' kpt_oks_sigmas) in our joint order; the
    # Neck, which COCO lacks, takes the shoulders'.
    'track_oks_sigmas': [0.026, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107,
                         0.087, 0.089, 0.107, 0.087, 0.089, 0.025, 0.025, 0.035, 0.035],
    # A detection continues a track only with at least this OKS against the track's predicted
    # keypoints (the person's area taken as the square of its keypoint box's longer side).
    'track_min_oks': 0.3,
    # A new person gets an ID once seen in this many frames (at once in a run's first frames):
    # a false detection of a frame or two gets none, and a person coming back from an
    # occlusion, often seen in pieces at first, is recognised before an ID is given.
    'track_confirm_frames': 3,
    # A track not matched for longer than this (seconds of video or camera time) is ended:
    # occlusions shorter than this keep their ID.  IDs are never reused.
    'track_max_lost_s': 1.0,
    # Where a lost track is looked for is less certain the longer it has been lost: the
    # person's size in the OKS grows by this fraction per second since last seen.  (At 1.0 a
    # walker re-emerging from 0.9 s behind a pillar in track_eval's 'pillar' scored OKS 0.34,
    # at 1.5 0.45, against track_min_oks 0.3.)
    'track_lost_growth': 1.5,
    # A lost track is also looked for where each of its states of the last this many seconds
    # before it was lost (this many of them, evenly spaced) predicts it: a person going
    # behind an occluder is often last seen with the hidden joints placed at the occluder's
    # edge, which bends the track's latest positions and velocity.
    'track_relink_history_s': 0.5,
    'track_relink_states': 5,
    # At most this many people per frame are tracked (the strongest; OpenPose's
    # POSE_MAX_PEOPLE); the rest keep person_id -1 and their raw keypoints.
    'track_max_people': 127,
    # One-Euro filter (Casiez et al., CHI 2012) per keypoint: cutoff = min_cutoff + beta *
    # speed, in Hz, the speed in person sizes (keypoint box's longer side) per second.  Chosen
    # on bench/bench_tracking.py's sequences: a lower beta cuts more jitter, but limbs moving
    # fast relative to the body lag more (this filter alone follows them).  The d_cutoff is
    # the paper's.
    'smooth_min_cutoff': 0.5,
    'smooth_beta': 2.5,
    'smooth_d_cutoff': 1.0,
    # The same for the person's own motion (its joints' median displacement), which moves all
    # its joints: the joints' filters above then smooth only their motion relative to it.
    'smooth_person_min_cutoff': 1.0,
    'smooth_person_beta': 10.0,
    # Frame interval assumed when a timestamp does not increase (repeated or backwards clock).
    'smooth_fallback_dt': 1 / 30.0,
    # Face boxes (camera_face_demo.py) are tracked as their two corners with this OKS sigma.
    'track_face_box_sigma': 0.1,
    # Limits on size-like inputs, checked before any work (README "Promises").
    # --scales: at most this many, each in (0, max_inference_scale].  Memory grows with the
    # largest scale: a 4:1 picture at scale 3 is a 1104x4416 net input, about 3 GB peak for
    # the CMU body net on the CPU (1.6 GB at scale 2); 3 is 1.5x OpenPose's "maximum
    # accuracy" setting (736 px).
    'max_inference_scales': 8,
    'max_inference_scale': 3.0,
    # --net-resolution / --face-net-resolution / --hand-net-resolution: multiples of 8 in
    # this range (736 = twice the default: more than the crops' own detail)
    'net_resolution_range': (8, 736),
    # --out-fps: OpenCV's FFmpeg writer spins forever on inf, refuses timebases finer than
    # 1/65535 and its AVI writer caps the rate at 600
    'out_fps_range': (0.01, 600.0),
    # image pixels (width x height): OpenCV's decoders refuse more (OPENCV_IO_MAX_IMAGE_PIXELS)
    'max_image_pixels': 2 ** 30,
}
