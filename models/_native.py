"""C kernels of ``models/*.c``, compiled on first use with the system C compiler and loaded
with ctypes.

Only where a measurement showed that no library call does the job fast enough (see the
comment at the top of each ``.c`` file).  Each caller keeps a NumPy/OpenCV fallback: with
no working compiler (or ``POSE_NATIVE=0``), ``load`` returns None, warns once, and the
results stay the same (slower).

The library is built once per source text, compiler, flags and CPU into a cache directory
(``$POSE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/chainer-pose``, else
``~/.cache/chainer-pose``), written to a temporary name and renamed, so concurrent first
runs do not see half-written files.  Its size and SHA-256 go into ``<library>.sha256``
beside it; a cached library that does not match them (truncated, overwritten: loading a
truncated library kills the process with SIGBUS) is never loaded but rebuilt, with one
warning line.  ``$CC`` picks the compiler (default ``cc``).
"""
import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile

from cli import warn

HERE = os.path.dirname(os.path.abspath(__file__))
# Tried in order: -march=native vectorises for this CPU (the cache key names the CPU).
FLAG_SETS = (['-O3', '-march=native'], ['-O3'])
_LOADED = {}  # name -> CDLL or None
_REASONS = {}  # name -> why it is None


def cache_dir():
    explicit = os.environ.get('POSE_NATIVE_CACHE')
    if explicit:
        return explicit
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'chainer-pose')


def _cpu_id():
    """What ``-march=native`` depends on: the machine type and, on Linux, the CPU model
    and flags."""
    ident = [platform.machine(), platform.processor()]
    try:
        with open('/proc/cpuinfo') as f:
            lines = f.read().split('\n\n')[0].splitlines()  # the first CPU's block
        # x86: model name + flags; ARM: implementer, part, features
        ident += [line for line in lines if line.startswith(
            ('model name', 'flags', 'CPU implementer', 'CPU part', 'Features'))]
    except OSError:
        pass
    return '\n'.join(ident)


def _checksum(path):
    """'<size> <sha256>' of the file at ``path``."""
    with open(path, 'rb') as f:
        data = f.read()
    return '%d %s' % (len(data), hashlib.sha256(data).hexdigest())


def _damage(target):
    """Why the cached library ``target`` must not be loaded (None: it is what was built)."""
    try:
        with open(target + '.sha256') as f:
            recorded = f.read().strip()
    except OSError:
        return 'no checksum recorded'
    try:
        actual = _checksum(target)
    except OSError as e:
        return 'unreadable: %s' % (e.strerror or e)
    if actual == recorded:
        return None
    size, recorded_size = actual.split()[0], recorded.split()[0]
    if size != recorded_size:
        return '%s bytes, %s were written' % (size, recorded_size)
    return 'checksum differs from what was written'


def _compile(source, compiler, flags, target):
    """Compile ``source`` into the shared library ``target`` (atomically, its checksum
    recorded first); the compiler's last error line, or None on success."""
    try:
        command = shlex.split(compiler)
    except ValueError as e:  # e.g. CC='"x'
        return 'cannot parse $CC %r (%s)' % (compiler, e)
    if not command:
        return '$CC is empty'
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(target))
    os.close(fd)
    sum_tmp = tmp + '.sha256'
    try:
        try:
            run = subprocess.run(command + flags + ['-shared', '-fPIC', source, '-o', tmp],
                                 capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            return '%s: %s' % (compiler, e)
        if run.returncode != 0:
            lines = (run.stderr or run.stdout).strip().splitlines()
            return lines[-1] if lines else '%s exited with %d' % (compiler, run.returncode)
        os.chmod(tmp, 0o755)  # mkstemp made it private; a shared cache must stay loadable
        with open(sum_tmp, 'w') as f:
            f.write(_checksum(tmp) + '\n')
        os.chmod(sum_tmp, 0o644)
        # the checksum first: a library under the final name always has its checksum
        os.replace(sum_tmp, target + '.sha256')
        os.replace(tmp, target)
        return None
    finally:
        for path in (tmp, sum_tmp):
            if os.path.exists(path):
                os.remove(path)


def _build(name, stale=None):
    """``(path of the built library, None)`` or ``(None, reason)``; a cached library at
    ``stale`` (one that failed to load) is removed and built again."""
    if os.environ.get('POSE_NATIVE', '1') == '0':
        return None, 'disabled by POSE_NATIVE=0'
    source = os.path.join(HERE, name + '.c')
    with open(source, 'rb') as f:
        text = f.read()
    compiler, cpu, cache = os.environ.get('CC', 'cc'), _cpu_id().encode(), cache_dir()
    targets = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b'\0'.join([text, compiler.encode(), ' '.join(flags).encode(),
                                         cpu])).hexdigest()[:16]
        targets.append((flags, os.path.join(cache, '%s-%s.so' % (name, key))))
    damaged = None  # said in the one line about the outcome
    for _, target in targets:
        if target == stale:
            _remove(target)
        if os.path.exists(target):
            damage = _damage(target)
            if damage is None:
                return target, None
            damaged = 'cached %s failed its check (%s)' % (target, damage)
            _remove(target)
    reason = None
    for flags, target in targets:
        try:
            reason = _compile(source, compiler, flags, target)
        except OSError as e:  # cache directory not writable
            reason = 'cannot write %s: %s' % (cache, e.strerror or e)
            break
        if reason is None:
            if damaged:
                warn('C kernel %s.c: %s: built again' % (name, damaged))
            return target, None
    if damaged:
        reason = '%s; building it again failed: %s' % (damaged, reason)
    return None, reason


def _remove(target):
    for path in (target, target + '.sha256'):
        try:
            os.remove(path)
        except OSError:
            pass


def load(name, signatures):
    """The ``ctypes.CDLL`` of ``models/<name>.c`` with ``signatures`` ({function: (restype,
    [argtypes])}) set, or None (with one warning per process) where it cannot be built."""
    if name not in _LOADED:
        path, reason = _build(name)
        lib = None
        for attempt in (0, 1):  # a cached library that does not load is rebuilt once
            if path is None:
                break
            try:
                lib = ctypes.CDLL(path)
                for fn, (restype, argtypes) in signatures.items():
                    getattr(lib, fn).restype = restype
                    getattr(lib, fn).argtypes = argtypes
                reason = None
                break
            except (OSError, AttributeError) as e:
                lib, reason = None, '%s: %s' % (path, e)
                if attempt == 0:
                    path, rebuilt_reason = _build(name, stale=path)
                    reason = rebuilt_reason or reason
        _LOADED[name], _REASONS[name] = lib, reason
        if lib is None and reason != 'disabled by POSE_NATIVE=0':
            warn('C kernel %s.c unavailable (%s): using the slower NumPy/OpenCV path'
                 % (name, reason))
    return _LOADED[name]


def reason(name):
    """Why ``load(name)`` gave None (None if it did not)."""
    return _REASONS.get(name)
