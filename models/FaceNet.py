"""The OpenPose face keypoint network (70 points + background = 71 maps).

Layer for layer as openpose ``models/face/pose_deploy.prototxt``; see
``models/_cpm.py``.  ``FaceNet()(x)`` returns the six stages' heatmaps; ``x``
is a float32 NCHW BGR crop normalised as x / 256 - 0.5.
"""
from entity import params
from models._cpm import CPMNet


class FaceNet(CPMNet):
    insize = params['face_inference_img_size']
    n_maps = params['face_n_keypoints'] + 1  # + background
