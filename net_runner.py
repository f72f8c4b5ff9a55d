"""The nets behind the detectors: where they run (``--gpu``, ``--backend``) and their
inference-mode forward, shared by ``pose_detector.PoseDetector`` and
``keypoint_net.KeypointNetDetector``."""
import numpy as np

import cli
import onnx_backend


class NetRunner(object):
    """A net ``arch`` loaded from ``weights_file`` (or ``model``, an already built net) for
    ``backend`` ('chainer', or 'onnx': onnxruntime, CPU only) on ``device`` (-1: CPU, N >= 0:
    GPU N with CuPy)."""

    def __init__(self, arch, weights_file, device=-1, backend='chainer', model=None):
        self.device = -1 if device is None else device
        if backend != 'chainer' and self.device >= 0:
            raise cli.UserError('the %s backend runs on the CPU: use --backend chainer with '
                                '--gpu' % backend)
        self.xp = cli.get_array_module(self.device)
        if model is None:
            model = onnx_backend.load_net(arch, weights_file, backend)
        if self.device >= 0 and hasattr(model, 'to_gpu'):  # a Chainer net or an OnnxNet
            model.to_gpu(self.device)
        self.model = model

    def run(self, x):
        """The net's outputs for the input array ``x`` in inference mode (no graph: the CPU
        and GPU fast paths of models/)."""
        import chainer
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            return self.model(self.xp.asarray(x))

    def to_numpy(self, v):
        """A Variable or array of ``run``'s output as a float32 NumPy array."""
        a = getattr(v, 'array', v)
        if self.xp is not np:
            import chainer
            a = chainer.backends.cuda.to_cpu(a)
        return np.asarray(a, np.float32)
