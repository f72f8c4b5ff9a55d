"""The OpenPose hand keypoint network (21 points + background = 22 maps).

Layer for layer as openpose ``models/hand/pose_deploy.prototxt``; see
``models/_cpm.py``.  ``HandNet()(x)`` returns the six stages' heatmaps; ``x``
is a float32 NCHW BGR crop normalised as x / 256 - 0.5.
"""
from entity import params
from models._cpm import CPMNet


# FaceNet's twin by design: the CPM nets differ only in these two numbers (models/_cpm.py).
class HandNet(CPMNet):
    insize = params['hand_inference_img_size']
    n_maps = params['hand_n_keypoints'] + 1  # + background
