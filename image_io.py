"""Pictures in and out as the scripts see them: reading any file -> BGR uint8 HxWx3, turned by
its EXIF orientation, or a one-line ``cli.UserError`` naming the file; writing the result
picture and its JSON (``check_outputs`` before any work, ``write_outputs`` atomically)."""
import os
import re

import cv2
import numpy as np

import cli
from entity import params


def read_image(path, exif=True):
    """Read any picture file as a BGR uint8 HxWx3 array, turned as an image viewer shows it.

    The EXIF orientation is applied (a phone photo's pixels are stored sideways with a tag
    saying so), unless ``exif`` is False (the pixels as stored).  Grey images are expanded
    to three channels, an alpha channel is dropped, 16-bit and float images are brought to
    8 bits.  Missing, empty, unreadable or undecodable files, and images over OpenCV's
    ``max_image_pixels``, raise ``cli.UserError`` naming the file; a truncated JPEG (which
    OpenCV decodes without a word, the missing part grey) gives a warning.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise cli.UserError('%s: no such file' % path)
    if os.path.isdir(path):
        raise cli.UserError('%s: is a directory, not an image' % path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise cli.UserError('%s: cannot read (%s)' % (path, e.strerror or e))
    if not data:
        raise cli.UserError('%s: empty file, not an image' % path)
    buf = np.frombuffer(data, np.uint8)
    # IMREAD_UNCHANGED would ignore the EXIF orientation; these flags apply it and still
    # keep 16-bit and float depths (alpha is dropped, as to_bgr8 does anyway).
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    if not exif:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    img, too_large = None, False
    with cli.library_stderr() as said:  # libpng & co. print on stderr: folded in below
        try:
            img = cv2.imdecode(buf, flags)
            if img is None:  # a few layouts only decode as stored (4-channel float TIFF)
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error as e:
            too_large = 'MAX_IMAGE_PIXELS' in str(e)
    if too_large:
        raise cli.UserError('%s: image over the %d-pixel limit of OpenCV\'s decoders '
                            '(entity max_image_pixels)' % (path, params['max_image_pixels']))
    if (img is None or img.size == 0) and jpeg_truncated(data):
        # OpenCV 4.10 decodes the part that is there; 4.11+ refuse the file
        raise cli.UserError('%s: truncated JPEG (the file ends inside the image data) that '
                            'this OpenCV does not decode' % path)
    if img is None or img.size == 0:
        raise cli.UserError('%s: not an image OpenCV can decode (unknown format, corrupt or '
                            'too large%s)' % (path, '; ' + said[-1] if said else ''))
    if said:
        cli.warn('%s: %s' % (path, said[-1]))
    if jpeg_truncated(data):
        cli.warn('%s: truncated JPEG (the file ends inside the image data): the missing '
                 'part is grey' % path)
    return to_bgr8(img, path)


# Any marker but a stuffed 0xFF00, a restart marker (RST0-7) or a fill byte.
_JPEG_MARKER = re.compile(b'\xff[^\x00\xd0-\xd7\xff]')


def jpeg_truncated(data):
    """Whether ``data`` is a JPEG that ends before its end-of-image marker.  (OpenCV's
    decoder fills such files up with grey silently; bytes after the marker, such as a
    phone's appended motion-photo video, are allowed.)"""
    if not data.startswith(b'\xff\xd8'):
        return False
    i, n = 2, len(data)
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 2 > n:
            return True
        if data[i] != 0xFF:
            return False  # not a marker where one must be: damaged, the decoder judges
        marker = data[i + 1]
        if marker == 0xD9:
            return False  # end of image
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        if i + 4 > n:
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            m = _JPEG_MARKER.search(data, i)
            if m is None:
                return True
            i = m.start()


def to_bgr8(img, name='image'):
    """Convert a decoded image (any depth, 1/2/3/4 channels) to BGR uint8 HxWx3."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):  # HDR/EXR/TIFF floats: assume 0..1
        img = np.clip(np.nan_to_num(img) * 255 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        info = np.iinfo(img.dtype) if img.dtype.kind in 'iu' else None
        if info is None:
            raise cli.UserError('%s: unsupported pixel type %s' % (name, img.dtype))
        img = np.clip(img, 0, None).astype(np.float64) * (255.0 / info.max)
        img = (img + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise cli.UserError('%s: unsupported image shape %s' % (name, img.shape))
    channels = img.shape[2]
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif channels == 2:  # grey + alpha
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGR)
    elif channels == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif channels != 3:
        raise cli.UserError('%s: unsupported number of channels %d' % (name, channels))
    return np.ascontiguousarray(img)


def encode_image(path, img):
    """PNG/JPEG/... bytes of ``img`` for ``path``'s extension (one-line error if unknown)."""
    ext = os.path.splitext(path)[1] or '.png'
    try:
        ok, buf = cv2.imencode(ext, img)
    except cv2.error:
        ok = False
    if not ok:
        raise cli.UserError('%s: cannot write an image with extension %r' % (path, ext))
    return buf.tobytes()


def write_outputs(out_path, img, json_path=None, json_obj=None):
    """Write the picture (and the JSON): each file goes through cli.atomic_output, the
    JSON's inside the picture's, so a failure leaves no partial file and no picture without
    its JSON.  Says where each file went."""
    data = encode_image(out_path, img)
    with cli.atomic_output(out_path) as tmp_img:
        with open(tmp_img, 'wb') as f:
            f.write(data)
        if json_path:
            cli.write_json_atomic(json_path, json_obj)
    print('Saving result into %s...' % out_path)
    if json_path:
        print('Keypoints written to %s' % json_path)


def check_outputs(out_path, json_path=None, inputs=()):
    """Fail before any work when an output cannot be written (unknown image extension,
    missing directory, not a regular file) or is the same file as the other output or one
    of ``inputs`` ((flag, path) pairs: the image and weights)."""
    cli.check_outputs([('--out', out_path), ('--json', json_path)], inputs)
    if not cv2.haveImageWriter(out_path):
        raise cli.UserError('%s: cannot write an image with extension %r'
                            % (out_path, os.path.splitext(out_path)[1]))
