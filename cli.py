"""Shared command-line plumbing: one-line errors, atomic outputs, GPU selection.

Every script is a thin argparse CLI over importable functions.  Functions raise
``UserError`` for bad input (naming the file, layer or shape); ``run_main``
turns it into one line on stderr and exit status 2, never a traceback.
"""
import contextlib
import os
import sys
import tempfile


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def run_main(main, argv=None):
    """Call ``main(argv)``; ``UserError`` -> ``error: ...`` on stderr and exit 2."""
    try:
        status = main(argv)
    except UserError as e:
        print('error: %s' % e, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


@contextlib.contextmanager
def atomic_output(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched, so
    no partial output is ever left.  ``suffix`` defaults to ``path``'s extension
    (writers such as ``cv2.imwrite`` and ``numpy.savez`` pick the format from it).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UserError('%s: output directory %s does not exist' % (path, directory))
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=suffix,
                                   dir=directory)
    except OSError as e:
        raise UserError('%s: cannot write (%s)' % (path, e.strerror or e))
    os.close(fd)
    # mkstemp creates the file 0600; give the output the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise UserError('%s: cannot write (%s)' % (path, e.strerror or e))
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_bytes_atomic(path, data):
    with atomic_output(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)


def ensure_output_dir(path, flag='--out'):
    """Create the output directory ``path`` if needed and check that files can be made in it:
    a file in its place or a read-only place is a ``UserError`` before any long work."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError('%s %s: exists and is not a directory' % (flag, path))
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError('%s %s: cannot write there (%s)' % (flag, path, e.strerror or e))
    return path


def get_array_module(device):
    """Select ``device`` (-1 = CPU) and return numpy or cupy.

    CuPy is imported only here, lazily; a missing CuPy or GPU is a ``UserError``.
    """
    import numpy
    if device is None or device < 0:
        return numpy
    try:
        import cupy
    except ImportError:
        raise UserError('--gpu %d needs CuPy, which is not installed '
                        '(pip install cupy-cuda12x matching your CUDA)' % device)
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise UserError('--gpu %d: no usable CUDA GPU (%s)' % (device, e))
    if device >= n:
        raise UserError('--gpu %d: only %d CUDA device(s) found' % (device, n))
    cupy.cuda.Device(device).use()
    return cupy
