"""weights_io: .pth files read without torch and without running pickled code."""
import os
import pickle
import zipfile

import numpy as np
import pytest

from cli import UserError
from support import caffe_files
from support.testing import FIXTURES
import weights_io

# tests/fixtures/make_pth_fixture.py wrote these with real torch.save (2.13)
LAYERS = [('conv1_1', 3, 64, 3), ('conv1_2', 64, 64, 3), ('Mconv7_stage6', 128, 22, 1)]


def fixture_values(n, seed):
    """The make_pth_fixture.py formula: multiples of 1/1024, exact in float32."""
    j = np.arange(n, dtype=np.int64)
    return (((j * 7919 + 13 * seed) % 2001) - 1000).astype(np.float32) / 1024


def expected_layers(layers=LAYERS):
    out = {}
    for i, (name, n_in, n_out, k) in enumerate(layers):
        shape = (n_out, n_in, k, k)
        out[name] = [fixture_values(int(np.prod(shape)), 2 * i).reshape(shape),
                     fixture_values(n_out, 2 * i + 1)]
    return out


@pytest.mark.parametrize('name', ['hand_subset.pth', 'hand_subset_legacy.pth'])
def test_real_torch_save_files_read_exactly(name, tmp_path):
    path = os.path.join(FIXTURES, name)
    state = weights_io.read_pth(path)
    assert list(state) == ['conv1_1.weight', 'conv1_1.bias', 'conv1_2.weight', 'conv1_2.bias',
                           'Mconv7_stage6.weight', 'Mconv7_stage6.bias']
    from_pth = weights_io.read_layers(path)
    # the same weights written as a caffemodel read back identically
    caffemodel = str(tmp_path / 'same.caffemodel')
    caffe_files.write_caffemodel(caffemodel, list(expected_layers().items()))
    from_caffe = weights_io.read_layers(caffemodel)
    assert list(from_pth) == list(from_caffe) == [n for n, *_ in LAYERS]
    for name_ in from_pth:
        for a, b, c in zip(from_pth[name_], from_caffe[name_], expected_layers()[name_]):
            assert a.dtype == b.dtype == np.float32
            assert np.array_equal(a, b) and np.array_equal(a, c)


def _zip_pth(path, pkl, storages=()):
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('archive/data.pkl', pkl)
        z.writestr('archive/byteorder', 'little')
        for key, data in storages:
            z.writestr('archive/data/' + key, data)


def _system_pickle(module, command):
    """A pickle that calls module.system(command) when loaded by plain pickle."""
    return (b'\x80\x02c' + module.encode() + b'\nsystem\nX' + len(command).to_bytes(4, 'little')
            + command.encode() + b'\x85R.')


@pytest.mark.parametrize('module', ['os', 'posix'])
@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_pickle_calling_system_is_refused_and_not_run(tmp_path, module, fmt):
    marker = tmp_path / 'pwned'
    pkl = _system_pickle(module, 'touch %s' % marker)
    # make sure the payload is real: plain pickle would run it
    path = str(tmp_path / 'evil.pth')
    if fmt == 'zip':
        _zip_pth(path, pkl)
    else:
        with open(path, 'wb') as f:
            f.write(pkl)
    with pytest.raises(UserError, match=r'evil\.pth: refusing to load: the pickle references '
                                        + module + r'\.system'):
        weights_io.read_pth(path)
    assert not marker.exists()
    pickle.loads(pkl)  # the same bytes through plain pickle do run the command
    assert marker.exists()


def _tensor_pickle(numel, size):
    """A hand-assembled torch zip-format data.pkl: {'w.weight': tensor(size)} on one storage."""
    def s(text):
        return b'X' + len(text).to_bytes(4, 'little') + text.encode()

    def k(v):
        return b'K' + bytes([v])
    dims = b'(' + b''.join(k(d) for d in size) + b't'
    strides, acc = [], 1
    for d in reversed(size):
        strides.insert(0, acc)
        acc *= d
    stride = b'(' + b''.join(k(d) for d in strides) + b't'
    return (b'\x80\x02}(' + s('w.weight')                         # {'w.weight':
            + b'ctorch._utils\n_rebuild_tensor_v2\n('                 #  _rebuild_tensor_v2(
            + b'(' + s('storage') + b'ctorch\nFloatStorage\n' + s('0') + s('cpu') + k(numel)
            + b'tQ'                                            #   persistent storage,
            + k(0) + dims + stride + b'\x89'                   #   offset, size, stride, False,
            + b'ccollections\nOrderedDict\n)R'                 #   OrderedDict())
            + b'tRu.')


def test_hand_assembled_pickle_reads_and_bounds_are_checked(tmp_path):
    data = np.arange(12, dtype='<f4')
    path = str(tmp_path / 'ok.pth')
    _zip_pth(path, _tensor_pickle(12, (3, 4)), [('0', data.tobytes())])
    state = weights_io.read_pth(path)
    assert np.array_equal(state['w.weight'], data.reshape(3, 4))
    # a tensor claiming more elements than its storage holds: never read past it
    bad = str(tmp_path / 'bad.pth')
    _zip_pth(bad, _tensor_pickle(12, (4, 4)), [('0', data.tobytes())])
    with pytest.raises(UserError, match=r'bad\.pth: tensor w\.weight of shape \(4, 4\) runs past'):
        weights_io.read_pth(bad)
    # a storage shorter than declared
    short = str(tmp_path / 'short.pth')
    _zip_pth(short, _tensor_pickle(12, (3, 4)), [('0', data[:5].tobytes())])
    with pytest.raises(UserError, match=r'short\.pth: storage archive/data/0 holds 20 bytes'):
        weights_io.read_pth(short)


def test_truncated_pth(tmp_path):
    for name in ('hand_subset.pth', 'hand_subset_legacy.pth'):
        with open(os.path.join(FIXTURES, name), 'rb') as f:
            data = f.read()
        for cut in (10, 700, len(data) // 2, len(data) - 3):
            path = str(tmp_path / ('cut%d_%s' % (cut, name)))
            with open(path, 'wb') as f:
                f.write(data[:cut])
            with pytest.raises(UserError, match=r'cut%d_%s: ' % (cut, name.replace('.', r'\.'))):
                weights_io.read_pth(path)


def test_parse_prototxt():
    msg = caffe_files.parse_prototxt(
        'name: "n" # comment\ninput_dim: 3\nlayer { name: \'a\' type: "Convolution"\n'
        '  convolution_param { num_output: 8 kernel_size: 3 } }\nlayer { name: "b" x: 1.5 }')
    assert msg['name'] == ['n'] and msg['input_dim'] == [3]
    assert [l['name'][0] for l in msg['layer']] == ['a', 'b']
    assert msg['layer'][0]['convolution_param'][0]['num_output'] == [8]
    assert msg['layer'][1]['x'] == [1.5]
    with pytest.raises(ValueError):
        caffe_files.parse_prototxt('layer { name: "a" ')


def _pickle_int(v):
    """A pickle opcode pushing the int ``v`` (LONG1 for any size)."""
    raw = v.to_bytes((v.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(raw)]) + raw


def _forged_pickle(numel, size, stride):
    """A torch state-dict pickle {'w.weight': tensor(size, stride) on storage '0' of numel}."""
    def s(text):
        return b'X' + len(text).to_bytes(4, 'little') + text.encode()

    def tup(values):
        return b'(' + b''.join(_pickle_int(v) for v in values) + b't'
    return (b'\x80\x02}(' + s('w.weight') + b'ctorch._utils\n_rebuild_tensor_v2\n('
            + b'(' + s('storage') + b'ctorch\nFloatStorage\n' + s('0') + s('cpu')
            + _pickle_int(numel) + b'tQ' + _pickle_int(0) + tup(size) + tup(stride) + b'\x89'
            + b'ccollections\nOrderedDict\n)R' + b'tRu.')


def _declare_member_size(path, name, size):
    """Rewrite the uncompressed size of zip member ``name`` in both of its headers."""
    import struct
    data = bytearray(open(path, 'rb').read())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(name).header_offset
    struct.pack_into('<I', data, local + 22, size)
    at = data.index(b'PK\x01\x02')
    while data[at + 46:at + 46 + len(name)] != name.encode():
        at = data.index(b'PK\x01\x02', at + 1)
    struct.pack_into('<I', data, at + 24, size)
    open(path, 'wb').write(bytes(data))


def test_forged_pth_declaring_149_gib_is_refused_without_allocating(tmp_path):
    """A few hundred bytes declaring a 200000 x 200000 float tensor (149 GiB), by stride 0
    over one stored value or by a legacy storage count, and a deflated storage declaring
    4 GiB: each refused from what is declared, before anything that large is allocated (it
    was a MemoryError, or the kernel's OOM killer where memory is overcommitted)."""
    zero_stride = str(tmp_path / 'zero_stride.pth')
    _zip_pth(zero_stride, _forged_pickle(1, (200000, 200000), (0, 0)),
             [('0', np.ones(1, '<f4').tobytes())])
    assert os.path.getsize(zero_stride) < 1000
    with pytest.raises(UserError, match=r'zero_stride\.pth: tensor w\.weight of shape '
                                        r'\(200000, 200000\) has more elements than its '
                                        r'storage \(1 values\)'):
        weights_io.read_pth(zero_stride)

    big = 200000 * 200000
    legacy = str(tmp_path / 'legacy.pth')
    with open(legacy, 'wb') as f:
        for obj in (weights_io._LEGACY_MAGIC, weights_io._LEGACY_PROTOCOL,
                    {'little_endian': True}):
            pickle.dump(obj, f, protocol=2)
        # legacy persistent ids carry a sixth field (the view), None here
        f.write(_forged_pickle(big, (200000, 200000), (200000, 1)).replace(b'tQ', b'NtQ'))
        pickle.dump(['0'], f, protocol=2)
        f.write(np.array([big], '<i8').tobytes() + bytes(64))
    with pytest.raises(UserError, match=r'legacy\.pth: storage 0 declares 160000000000 '
                                        r'bytes, more than the file holds'):
        weights_io.read_pth(legacy)

    # a deflated storage declaring 4 GiB: more than its compressed bytes can expand to
    deflated = str(tmp_path / 'deflated.pth')
    numel = 0xFFFFFFFF // 4
    with zipfile.ZipFile(deflated, 'w', zipfile.ZIP_DEFLATED) as z:
        z.writestr('archive/data.pkl', _forged_pickle(numel, (numel,), (1,)))
        z.writestr('archive/data/0', bytes(1 << 20))
    _declare_member_size(deflated, 'archive/data/0', 0xFFFFFFFF)
    with pytest.raises(UserError, match=r'deflated\.pth: archive/data/0 declares 4294967295 '
                                        r'bytes, more than its \d+ compressed bytes'):
        weights_io.read_pth(deflated)
