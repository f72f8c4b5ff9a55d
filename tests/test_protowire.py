import numpy as np
import pytest

import protowire as pw


def test_roundtrip_fields():
    msg = (pw.enc_bytes(1, b'conv1_1') + pw.enc_field(2, pw.VARINT, 300)
           + pw.enc_packed_float32(5, np.arange(4)) + pw.enc_field(3, pw.VARINT, -2))
    f = pw.fields(msg)
    assert pw.to_str(f[1][0][1]) == 'conv1_1'
    assert f[2] == [(pw.VARINT, 300)]
    np.testing.assert_array_equal(pw.packed_float32(f[5][0][1]), np.arange(4, dtype=np.float32))
    assert pw.packed_varints(pw.enc_varint(-2)) == [-2]


@pytest.mark.parametrize('cut', [1, 5, 12])
def test_truncated_message_raises(cut):
    msg = pw.enc_bytes(1, b'conv1_1') + pw.enc_packed_float32(5, np.arange(4))
    with pytest.raises(pw.WireError):
        list(pw.iter_fields(msg[:len(msg) - cut]))
