"""The keypoint-net detector shared by face_detector.py and hand_detector.py: a box cut out
as a square crop, OpenPose's CPM net on it, one peak per map mapped back to the image."""
import numpy as np

import body_maps
import cli
import image_io
import keypoint_crops
import lazy_maps
from entity import params
from net_runner import NetRunner


def check_net_resolution(n, flag='net resolution'):
    """The face / hand net input side ``n`` as an int, or a one-line ``cli.UserError``: a
    multiple of 8 within ``net_resolution_range``.  None stays None (the default)."""
    if n is None:
        return None
    lo, hi = params['net_resolution_range']
    if not (lo <= n <= hi and n % 8 == 0):
        raise cli.UserError('%s must be a multiple of 8 from %d to %d (net_resolution_range), '
                            'got %s' % (flag, lo, hi, n))
    return int(n)


class KeypointNetDetector(NetRunner):
    """Crop -> CPM net -> one peak per map, mapped back to the image (face and hand).

    ``model`` may be given instead of ``weights_file``: any callable taking the float32
    1x3xSxS input (x / 256 - 0.5, BGR) and returning a list of stages' maps
    (1, n_keypoints + 1, S/8, S/8), the last one used.  ``insize`` (a multiple of 8)
    overrides the net input side (smaller is faster, like OpenPose's --face_net_resolution).
    ``backend`` 'onnx' runs the net with onnxruntime (CPU; see onnx_backend.py).
    """
    arch = None
    size_key = thresh_key = n_key = None

    def __init__(self, weights_file=None, device=-1, insize=None, model=None,
                 backend='chainer'):
        self.insize = check_net_resolution(params[self.size_key] if insize is None else insize)
        self.n_keypoints = params[self.n_key]
        self.thresh = params[self.thresh_key]
        if model is None and weights_file is None:
            raise cli.UserError('no %s weights file given' % self.arch)
        super().__init__(self.arch, weights_file, device, backend, model)

    def forward(self, x):
        """The last stage's maps (n_keypoints + 1, S/8, S/8) for one preprocessed input."""
        h = self.to_numpy(self.run(x)[-1])
        return h.reshape(h.shape[-3:])

    def detect(self, img, box, mirror=False):
        """(n_keypoints, 3) x, y, score in ``img`` for ``box`` (x, y, w, h); all zeros for a
        box without area or outside the image.  ``mirror``: the crop goes through the net
        flipped left-right and the maps are flipped back."""
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            img = image_io.to_bgr8(img)
        result = np.zeros((self.n_keypoints, 3))
        crop = keypoint_crops.crop_square(img, box, params['crop_pad_value'])
        if crop is None:
            return result
        canvas, (x0, y0), _ = crop
        side = canvas.shape[0]
        net_in = body_maps.resize(canvas, (self.insize, self.insize))
        if mirror:
            net_in = net_in[:, ::-1]
        maps = self.forward(body_maps.to_net_input(net_in, 'caffe'))[:self.n_keypoints]
        if mirror:
            maps = maps[:, :, ::-1]
        stride = self.insize // maps.shape[-1]
        # Peaks are looked for at the crop's resolution, but never finer than the net input
        # (upsampling further adds no information, only memory) nor coarser than the net's
        # output (resampling a crop of a few pixels below it would lose peaks).
        work = min(max(side, maps.shape[-1]), self.insize)
        maps = lazy_maps.upsample_maps(np.ascontiguousarray(maps), stride,
                                       (self.insize, self.insize), (work, work))
        peaks = keypoint_crops.best_peak_per_map(maps, self.thresh)
        found = peaks[:, 2] > 0
        scale = side / float(work)
        result[found, 0] = x0 + (peaks[found, 0] + 0.5) * scale - 0.5
        result[found, 1] = y0 + (peaks[found, 1] + 0.5) * scale - 0.5
        result[found, 2] = peaks[found, 2]
        return result
