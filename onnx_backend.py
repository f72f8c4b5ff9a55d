"""Run the pose nets with onnxruntime instead of Chainer (``--backend onnx``).

    net = load_net('posenet', 'models/coco_posenet.npz', backend='onnx')  # or a .onnx file
    pafs, heatmaps = net(x)       # as CocoPoseNet: lists of the stages' maps (chainer.Variable)

``OnnxNet`` has the call interface of the Chainer nets: float32 NCHW in; for the body nets
``(pafs, heatmaps)``, for face and hand a list of heatmaps, one ``chainer.Variable`` per stage
(``.array`` is a NumPy array), so the detectors use either backend unchanged.  Weights are
either an ONNX file from ``export_onnx.py`` or the Chainer ``.npz`` itself (exported in memory
when loaded).  onnxruntime is optional: without it, a one-line error names ``make onnx``.
onnxruntime runs on the CPU here (the ``onnxruntime`` wheel); use the Chainer backend for GPUs.
"""
import ctypes
import ctypes.util
import os
import tempfile

import numpy as np

import cli
from cli import BACKENDS
from models import _onnx


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise cli.UserError('the onnx backend needs onnxruntime, which is not installed: '
                            'run %s' % _onnx.INSTALL_HINT)
    return onnxruntime


def release_freed_memory():
    """Give the C heap's freed memory back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere).  Building a session frees the file's weights once onnxruntime has copied
    them into its blocked layout, but glibc keeps the freed blocks (the body net's resident
    memory more than halves after the trim: bench/RESULTS.md)."""
    name = ctypes.util.find_library('c')
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


class OnnxNet(object):
    """An onnxruntime session with the Chainer nets' call interface.

    ``source``: a path to an ONNX file or the serialised model (bytes).  ``arch`` (if given)
    must match the file's ``arch`` metadata.
    """

    def __init__(self, source, arch=None, threads=None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # onnxruntime's worker threads otherwise spin after each run, taking the cores from
        # whatever runs next (cv2.dnn, the NumPy post-processing).
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        opts.add_session_config_entry('session.inter_op.allow_spinning', '0')
        name = source if isinstance(source, str) else '<exported model>'
        if isinstance(source, str) and not os.path.exists(source):
            raise cli.UserError('%s: no such ONNX file' % source)
        try:
            self.session = ort.InferenceSession(source, opts, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own exception types
            raise cli.UserError('%s: not a loadable ONNX model (%s)'
                                % (name, str(e).strip().splitlines()[0][:200]))
        release_freed_memory()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.arch = meta.get('arch')
        if arch is not None and self.arch != arch:
            raise cli.UserError('%s: holds a %s net, not %s (re-export it with export_onnx.py %s)'
                                % (name, self.arch or 'unknown', arch, arch))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.body = any(n.startswith('pafs') for n in self.output_names)

    def __call__(self, x):
        import chainer
        x = np.ascontiguousarray(getattr(x, 'array', x), dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError('expected a float32 (N, 3, H, W) input, got %s' % (x.shape,))
        outs = self.session.run(self.output_names, {self.input_name: x})
        named = dict(zip(self.output_names, outs))

        def stages(prefix):
            keys = sorted((n for n in named if n.startswith(prefix + '_')),
                          key=lambda n: int(n.rsplit('_', 1)[1]))
            return [chainer.Variable(named[k], requires_grad=False) for k in keys]
        if self.body:
            return stages('pafs'), stages('heatmaps')
        return stages('heatmaps')

    def to_gpu(self, device=None):
        raise cli.UserError('the onnx backend runs on the CPU; use --backend chainer with --gpu')


def load_net(arch, weights_file, backend='chainer'):
    """The net ``arch`` for ``backend``: the Chainer net with ``weights_file`` (.npz) loaded,
    or an ``OnnxNet`` from an ONNX file or from the .npz (exported in memory)."""
    if backend not in BACKENDS:
        raise cli.UserError('unknown backend %r (known: %s)' % (backend, ', '.join(BACKENDS)))
    if backend == 'onnx':
        import_onnxruntime()  # before the (slow) weight loading
        if os.fspath(weights_file).lower().endswith('.onnx'):
            return OnnxNet(os.fspath(weights_file), arch)
    from models import load_model
    model = load_model(arch, weights_file)
    if backend == 'chainer':
        return model
    proto = _onnx.to_onnx(model, arch)
    del model  # keep at most two copies of the weights alive at a time
    # through a file: onnxruntime copies bytes given to it, so the serialised model would be
    # held twice while the session is built (peak RSS: bench/RESULTS.md)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, arch + '.onnx')
        with open(path, 'wb') as f:
            f.write(proto.SerializeToString())
        del proto
        return OnnxNet(path, arch)
