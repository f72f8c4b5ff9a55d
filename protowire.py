"""A minimal reader of the protocol-buffer wire format.

Used to read ``.caffemodel`` (Caffe ``NetParameter``) and frozen TensorFlow
``GraphDef`` files without Caffe, TensorFlow or the protobuf package.
Hand-written because ``chainer.links.caffe.CaffeFunction`` takes most of a minute
and gigabytes on the CMU body model (bench/RESULTS.md); this reader walks the bytes
once and returns zero-copy views of the large blobs.
"""
import struct

import numpy as np

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protocol-buffer message."""


def _varint(buf, pos, end):
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError('truncated varint at byte %d' % pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError('varint too long at byte %d' % pos)


def iter_fields(buf, start=0, end=None):
    """Yield ``(field_number, wire_type, value)`` for each field of a message.

    ``buf`` is a ``bytes``/``memoryview``; the message spans ``buf[start:end]``.
    ``value`` is an int for varint/fixed fields (fixed32/64 as raw unsigned ints)
    and a ``memoryview`` for length-delimited fields (sub-messages, strings,
    packed arrays).  Raises ``WireError`` on truncated or malformed input.
    """
    if not isinstance(buf, memoryview):
        buf = memoryview(buf)
    if end is None:
        end = len(buf)
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise WireError('field number 0 at byte %d' % pos)
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == BYTES:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise WireError('field %d (%d bytes) runs past the end at byte %d'
                                % (field, length, pos))
            value = buf[pos:pos + length]
            pos += length
        elif wire == FIXED32:
            if pos + 4 > end:
                raise WireError('truncated fixed32 at byte %d' % pos)
            value = struct.unpack_from('<I', buf, pos)[0]
            pos += 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise WireError('truncated fixed64 at byte %d' % pos)
            value = struct.unpack_from('<Q', buf, pos)[0]
            pos += 8
        else:
            raise WireError('unsupported wire type %d at byte %d' % (wire, pos))
        yield field, wire, value


def fields(buf):
    """Group a message's fields: ``{field_number: [(wire_type, value), ...]}``."""
    out = {}
    for field, wire, value in iter_fields(buf):
        out.setdefault(field, []).append((wire, value))
    return out


def as_float32(value):
    """A fixed32 int to a Python float."""
    return struct.unpack('<f', struct.pack('<I', value))[0]


def packed_float32(view):
    """A packed ``repeated float`` field to a float32 array (copied, writable)."""
    if len(view) % 4:
        raise WireError('packed float field of %d bytes is not a multiple of 4' % len(view))
    return np.frombuffer(view, dtype='<f4').astype(np.float32)


def packed_varints(view):
    """A packed ``repeated int64/int32`` field to a list of ints."""
    out = []
    pos, end = 0, len(view)
    while pos < end:
        v, pos = _varint(view, pos, end)
        if v >= 1 << 63:
            v -= 1 << 64
        out.append(v)
    return out


def to_str(view):
    return bytes(view).decode('utf-8', errors='replace')


# --- writing (used by tests and bench to build real caffemodels / graphs) ---

def enc_varint(value):
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_field(field, wire, payload):
    """Encode one field. ``payload``: int for VARINT, bytes for BYTES."""
    key = enc_varint((field << 3) | wire)
    if wire == VARINT:
        return key + enc_varint(payload)
    if wire == BYTES:
        return key + enc_varint(len(payload)) + bytes(payload)
    if wire == FIXED32:
        return key + struct.pack('<I', payload)
    if wire == FIXED64:
        return key + struct.pack('<Q', payload)
    raise ValueError('unsupported wire type %d' % wire)


def enc_bytes(field, payload):
    return enc_field(field, BYTES, payload)


def enc_packed_float32(field, array):
    return enc_bytes(field, np.ascontiguousarray(array, dtype='<f4').tobytes())
