"""Shared command-line plumbing: one-line errors, safe atomic outputs, GPU selection.

Every script is a thin argparse CLI over importable functions.  Functions raise
``UserError`` for bad input (naming the file, layer or shape); ``run_main``
turns it into one line on stderr and exit status 2, never a traceback.
``check_outputs`` vets a command's output paths before any work (regular files or new
paths only, none the same file as another output or an input); ``atomic_output`` writes
them; ``warn`` and ``library_stderr`` keep stderr to our own one-line messages.
"""
import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def run_main(main, argv=None):
    """Call ``main(argv)``; ``UserError`` -> ``error: ...`` on stderr and exit 2.

    A command (``argv`` None) first restarts itself when NumPy's OpenBLAS runs generic
    kernels on a CPU with AVX2/AVX-512 (``compat.restart_with_fitting_kernels``), before MPI
    or any heavy work.
    """
    if argv is None:
        import compat
        compat.restart_with_fitting_kernels()
    try:
        status = main(argv)
    except UserError as e:
        print('error: %s' % e, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def _kind(mode):
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return name
    return 'not a regular file'


def _named(path, label):
    return '%s %s' % (label, path) if label else path


def output_target(path, label=None):
    """The file that writing the output ``path`` replaces: a symlink is followed to its real
    target (the target is replaced, the link kept).  A new path or a regular file is fine;
    a directory, device, FIFO or socket is refused (replacing ``/dev/full`` with a file, or
    a FIFO another program reads, is never what the user meant), as is a missing directory.
    ``label`` (e.g. ``'--out'``) is named in the error."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError('%s: cannot write there (%s)' % (_named(path, label), e.strerror or e))
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UserError('%s: is %s, not a regular file: refusing to replace it'
                        % (_named(path, label), _kind(st.st_mode)))
    if not os.path.isdir(os.path.dirname(real)):
        raise UserError('%s: output directory %s does not exist'
                        % (_named(path, label), os.path.dirname(os.path.abspath(path))))
    return real


def same_file(a, b):
    """Whether the paths ``a`` and ``b`` name one file (through symlinks, ``..`` or hard
    links); paths that do not exist yet are the same when they resolve alike."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_outputs(outputs, inputs=()):
    """Check a command's outputs before any work: ``outputs`` and ``inputs`` are
    ``(label, path)`` pairs (label: the flag, or None; path None: not given).

    Every output must be a path ``output_target`` accepts in a directory we can create files
    in; no two outputs and no output and input may be the same file (the input would be
    overwritten, or one output lost).  Raises ``UserError`` naming both paths."""
    seen = []
    for label, path in outputs:
        if path is None:
            continue
        real = output_target(path, label)
        for other_label, other in seen:
            if same_file(real, other):
                raise UserError('%s and %s are the same file: one output would be lost'
                                % (_named(other, other_label), _named(path, label)))
        check_writable(os.path.dirname(real), _named(path, label))
        seen.append((label, path))
    for label, path in inputs:
        if path is None or not os.path.exists(path):
            continue  # reported by its reader
        for out_label, out in seen:
            if same_file(path, out):
                raise UserError('%s is the same file as %s: writing it would destroy the '
                                'input' % (_named(out, out_label), _named(path, label)))


def check_writable(directory, name):
    """Create and remove a file in ``directory`` (``name`` is named in the error): the only
    test that holds for read-only mounts, ACLs and root alike."""
    try:
        _probe_write(directory)
    except OSError as e:
        raise UserError('%s: cannot write in %s (%s)' % (name, directory, e.strerror or e))


def _probe_write(directory):
    fd, probe = tempfile.mkstemp(prefix='.write-test.', dir=directory)
    os.close(fd)
    _remove_quietly(probe)


@contextlib.contextmanager
def atomic_output(path, suffix=None):
    """Yield a temporary path beside ``path``'s target; rename it onto the target on success.

    On any exception the temporary file is removed and ``path`` is untouched, so
    no partial output is ever left.  The target is ``output_target(path)``: a symlink's real
    file (the link stays), never a device or directory.  An existing file keeps its
    permission bits; a new one gets the umask's.  ``suffix`` defaults to ``path``'s
    extension (writers such as ``cv2.imwrite`` and ``numpy.savez`` pick the format from it).
    """
    path = os.fspath(path)
    target = output_target(path)
    directory = os.path.dirname(target)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(target) + '.', suffix=suffix,
                                   dir=directory)
    except OSError as e:
        raise UserError('%s: cannot write (%s)' % (path, e.strerror or e))
    os.close(fd)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:  # a new file: mkstemp made it 0600, give it the umask's mode
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    try:
        yield tmp
        os.replace(tmp, target)
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


def write_json_atomic(path, obj, indent=None):
    """``obj`` as JSON into ``path``, atomically; encoded first, so an object JSON cannot
    hold leaves ``path`` untouched."""
    write_bytes_atomic(path, json.dumps(obj, indent=indent).encode())


def warn(msg):
    """One ``warning: ...`` line on stderr, written through tqdm so that a running progress
    bar stays intact."""
    from tqdm import tqdm
    tqdm.write('warning: %s' % msg, file=sys.stderr)


@contextlib.contextmanager
def library_stderr():
    """Capture what C libraries (libpng, FFmpeg, ...) print on file descriptor 2 while the
    block runs, so that a run's stderr holds only our own one-line messages.  Yields a list
    that receives the captured non-empty lines when the block ends (callers fold them into
    their own message or drop them).  Keep the block to the library call: anything else
    printed meanwhile, from any thread, is captured too."""
    lines = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in
                         sink.read().decode('utf-8', 'replace').splitlines() if line.strip())


def ensure_output_dir(path, flag='--out'):
    """Create the output directory ``path`` if needed and check that files can be made in it:
    a file in its place or a read-only place is a ``UserError`` before any long work."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError('%s %s: exists and is not a directory' % (flag, path))
    try:
        os.makedirs(path, exist_ok=True)
        _probe_write(path)
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


class _PrecisionAction(argparse.Action):
    """``--precision`` goes to ``$POSE_GPU_PRECISION``, read by models/_gpu.py wherever the
    convolutions run (detectors, demos, training), so no constructor has to pass it on."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        os.environ['POSE_GPU_PRECISION'] = values


# --backend: the frameworks that run the nets (onnx_backend.py)
BACKENDS = ('chainer', 'onnx')


def add_device_arguments(parser, backend=True, gpu_note=''):
    """The flags that choose where the nets run, for every script that runs them: ``--gpu``
    (``gpu_note`` appended to its help), ``--precision`` and, unless ``backend`` is False,
    ``--backend``."""
    from entity import params
    parser.add_argument('--gpu', '-g', type=int, default=-1,
                        help='GPU id (negative: CPU)%s' % gpu_note)
    parser.add_argument('--precision', choices=params['gpu_precisions'], default=None,
                        action=_PrecisionAction,
                        help='GPU convolution precision: fp32 exact, tf32 tensor cores, '
                        'bf16/fp16 16-bit operands with float32 accumulation (default %s, '
                        'or $POSE_GPU_PRECISION)' % params['gpu_precision'])
    if backend:
        parser.add_argument('--backend', choices=BACKENDS, default='chainer',
                            help='run the nets with Chainer (default) or onnxruntime (CPU; '
                                 'install with `make onnx`; weights: the .npz or an ONNX file '
                                 'from export_onnx.py)')
