"""Stand-ins for the face and hand nets (tests/test_face_detector.py,
tests/test_hand_detector.py): a net whose maps peak at chosen cells, where those peaks
must land in the image, and random weights biased so that every map has a peak."""
import chainer
import numpy as np

from entity import params

INSIZE = params['face_inference_img_size']
assert params['hand_inference_img_size'] == INSIZE  # one map geometry serves both nets
MAP = INSIZE // 8  # 46
TOL = 1e-3  # float rounding of the cubic resampling; the expected positions are exact


class PeakNet(object):
    """Stand-in for FaceNet/HandNet: every map is 0 except 1.0 at a chosen map cell (x, y);
    the background map is empty.  Records the inputs it was given."""

    def __init__(self, cells, n_maps, value=1.0):
        self.cells, self.n_maps, self.value = np.asarray(cells), n_maps, value
        self.inputs = []

    def __call__(self, x):
        self.inputs.append(np.asarray(x))
        s = x.shape[-1] // 8
        maps = np.zeros((1, self.n_maps, s, s), np.float32)
        for k, (cx, cy) in enumerate(self.cells):
            maps[0, k, cy, cx] = self.value[k] if np.ndim(self.value) else self.value
        return [maps * 0.5, maps]  # two "stages": the last one counts


def cells(n, seed=0):
    """n distinct map cells off the map's edge (cv2's cubic resampling replicates the border,
    which moves a peak in an edge cell towards the edge: OpenPose's maps do the same)."""
    rng = np.random.RandomState(seed)
    inner = MAP - 2
    flat = rng.choice(inner * inner, n, replace=False)
    return np.stack([1 + flat % inner, 1 + flat // inner], 1)


def expected(c, x0, y0, side, mirror=False):
    """Image position of map cell c for a crop of ``side`` px at (x0, y0): the cell's centre in
    net pixels is 8c + 3.5, i.e. (c + 0.5) * side / MAP - 0.5 in crop pixels."""
    cx = (MAP - 1 - c[:, 0]) if mirror else c[:, 0]
    return np.stack([x0 + (cx + 0.5) * side / MAP - 0.5,
                     y0 + (c[:, 1] + 0.5) * side / MAP - 0.5], 1)


def save_peaked_net(cls, path):
    """Random ``cls`` (FaceNet or HandNet) weights whose last layer is biased so every map
    has a peak, saved to ``path``."""
    net = cls()
    net['Mconv7_stage6'].b.array[:] = 0.5
    chainer.serializers.save_npz(str(path), net, compression=False)
    return path
