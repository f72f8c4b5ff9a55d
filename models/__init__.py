"""Chainer network definitions, one file per network, and their weights files.

``get_model_class('posenet')`` resolves an architecture name from
``entity.params['archs']`` lazily, so that importing ``entity`` stays cheap;
``load_model(arch, path)`` builds a net and loads its npz (one-line errors, naming the
command that makes a missing file); ``default_weights(arch)`` finds an arch's own file.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import importlib
import os

from entity import params

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The CMU caffemodel that convert_model.py turns into each arch's npz.
CAFFEMODELS = {'posenet': 'pose_caffemodel', 'facenet': 'face_caffemodel',
               'handnet': 'hand_caffemodel'}


def repo_file(path):
    """``path`` relative to the working directory if it exists there, else relative to the
    repository if it exists there (so shipped files work from anywhere), else ``path``."""
    if not os.path.exists(path) and not os.path.isabs(path):
        in_repo = os.path.join(REPO_DIR, path)
        if os.path.exists(in_repo):
            return in_repo
    return path


def default_weights(arch):
    """The default weights file of ``arch`` (``entity.params['default_weights']``), found
    as ``repo_file`` does."""
    return repo_file(params['default_weights'][arch])


def convert_command(arch, path):
    """The command that makes ``path`` for ``arch`` from CMU's caffemodel, or None (the
    embedded model has no CMU file)."""
    if arch not in CAFFEMODELS:
        return None
    return 'python convert_model.py %s %s %s' % (arch, params[CAFFEMODELS[arch]], path)


def get_model_class(arch):
    """Return the Chainer ``Chain`` class registered for ``arch``.

    Raises ``ValueError`` naming the known architectures for an unknown name.
    """
    try:
        spec = params['archs'][arch]
    except KeyError:
        raise ValueError('unknown architecture %r (known: %s)'
                         % (arch, ', '.join(sorted(params['archs']))))
    module_name, class_name = spec.split(':')
    return getattr(importlib.import_module(module_name), class_name)


def check_weights(model, shapes, weights_file, arch):
    """Compare an npz's arrays (``shapes``: name -> shape) with ``model``'s parameters.

    Raises ``cli.UserError`` naming the file and the first missing layer or wrong shape.
    """
    from cli import UserError
    if not shapes:
        raise UserError('%s: empty weights file' % weights_file)
    params_ = sorted((name.lstrip('/'), param) for name, param in model.namedparams())
    missing = [key for key, _ in params_ if key not in shapes]
    if missing:
        raise UserError('%s: not %s weights: %d of the network\'s %d arrays missing '
                        '(first: %s)' % (weights_file, arch, len(missing), len(params_),
                                         missing[0]))
    for key, param in params_:
        if param.array is not None and tuple(param.shape) != tuple(shapes[key]):
            raise UserError('%s: not %s weights: %s has shape %s, the network needs %s'
                            % (weights_file, arch, key, tuple(shapes[key]),
                               tuple(param.shape)))


def serialized_shapes(model):
    """``{npz key: shape}`` of everything Chainer's serializers store for ``model``: the
    parameters and the persistents (batch-norm statistics and counters)."""
    import chainer
    import numpy as np
    shapes = {}

    class Recorder(chainer.serializer.Serializer):
        def __init__(self, prefix=''):
            self.prefix = prefix

        def __getitem__(self, key):
            return Recorder(self.prefix + key + '/')

        def __call__(self, key, value):
            shapes[self.prefix + key] = None if value is None else tuple(np.shape(value))
            return value
    model.serialize(Recorder())
    return shapes


class _FiniteArrays(object):
    """The npz as ``NpzDeserializer`` reads it, each array read once and refused if it
    holds NaN or Inf (damaged weights would load and give NaN maps without a word)."""

    def __init__(self, npz, path):
        self.npz, self.path = npz, path

    def __contains__(self, key):
        return key in self.npz

    def __getitem__(self, key):
        import weights_io
        a = self.npz[key]
        weights_io.check_finite({key: a}, self.path)
        return a


def load_model(arch, weights_file):
    """Build the net ``arch`` and load the Chainer npz ``weights_file`` into it
    (``load_weights``; the file is vetted before the net is built)."""
    _check_weights_file(os.fspath(weights_file), arch)
    return load_weights(get_model_class(arch)(), weights_file, arch)


def load_weights(model, weights_file, arch):
    """Load the Chainer npz ``weights_file`` into ``model``, a net ``arch``; returns it.  The
    one npz loader of the nets: detectors, the ONNX exporter, training's --initmodel.

    Every bad file is a one-line ``cli.UserError`` naming it: missing (with the command
    that makes it, ``convert_command``), a directory, not an npz (a PyTorch
    file or caffemodel: how to convert it), arrays that are not real numbers or declare more
    data than they hold, the weights of another network (the first missing layer or
    mismatching shape: checked from the arrays' headers, before any data is read), or NaN
    or infinite values (the array named).
    """
    import zipfile

    import chainer
    import numpy as np
    import weights_io
    from cli import UserError

    path = os.fspath(weights_file)
    _check_weights_file(path, arch)
    headers = weights_io.npz_headers(path, arch)
    check_weights(model, dict((k, shape) for k, (shape, _) in headers.items()), path, arch)
    for key, shape in serialized_shapes(model).items():  # persistents too
        if shape is not None and key in headers and headers[key][0] != shape:
            raise UserError('%s: not %s weights: %s has shape %s, the network needs %s'
                            % (path, arch, key, headers[key][0], shape))
    try:
        with np.load(path, allow_pickle=False) as npz:
            chainer.serializers.NpzDeserializer(_FiniteArrays(npz, path)).load(model)
    except UserError:
        raise
    except (zipfile.BadZipFile, EOFError) as e:
        raise UserError('%s: not a Chainer .npz weights file (%s)' % (path, e))
    except (KeyError, ValueError, OSError) as e:
        raise UserError('%s: cannot load %s weights (%s)'
                        % (path, arch, str(e).splitlines()[0] if str(e) else type(e).__name__))
    return model


def _check_weights_file(path, arch):
    """A one-line ``cli.UserError`` unless ``path`` is a zip file (what an npz is)."""
    import zipfile

    import weights_io
    from cli import UserError
    if not os.path.exists(path):
        command = convert_command(arch, path)
        raise UserError('%s: no such weights file%s' % (
            path, ' (make it from CMU\'s caffemodel with: %s)' % command if command else ''))
    if os.path.isdir(path):
        raise UserError('%s: is a directory, not a weights file' % path)
    if not zipfile.is_zipfile(path):
        raise UserError('%s: not a Chainer .npz weights file (not a zip archive%s)'
                        % (path, weights_io.convert_hint(path, arch)))
