"""convert_model.py: the CLI, its outputs and every kind of bad input.

Exactness of the converted nets against OpenCV is in tests/test_models.py, the
.pth reader in tests/test_weights_io.py.
"""
import functools
import os

import chainer
import numpy as np
import pytest

from cli import UserError
import convert_model
import weights_io
from models.CocoPoseNet import VGG19_FRONT
from models.HandNet import HandNet
from support import caffe_files, testing
from support.cmu_nets import conv_layers
from support.testing import FIXTURES, one_line_error, tfpose_pb

run = functools.partial(testing.run, 'convert_model.py', timeout=120)  # this module's script


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('caffe')
    out = {}
    for arch, net, keep in [('hand', 'handnet', None), ('face', 'facenet', None),
                            ('vgg', 'vgg19', set(VGG19_FRONT))]:
        convs = [c for c in conv_layers(net) if keep is None or c[0] in keep]
        layers = caffe_files.random_conv_weights(convs, seed=3)
        out[arch] = str(d / (arch + '.caffemodel'))
        caffe_files.write_caffemodel(out[arch], layers, v1=arch == 'vgg')
        if arch == 'hand':  # a prefix that ends exactly between two layers
            out['hand_prefix'] = str(d / 'hand_prefix.caffemodel')
            caffe_files.write_caffemodel(out['hand_prefix'], layers[:20])
            out['hand_prefix_next'] = layers[20][0]
    return out


def listing(directory):
    return sorted(os.listdir(directory))


def test_converts_caffemodel_and_loads_into_net(files, tmp_path):
    out = str(tmp_path / 'hand.npz')
    res = run('handnet', files['hand'], out)
    assert res.returncode == 0, res.stderr
    assert 'hand.npz: 52 layers' in res.stdout
    model = HandNet()
    chainer.serializers.load_npz(out, model)
    src = weights_io.read_caffemodel(files['hand'])
    assert np.array_equal(model.Mconv5_stage4.W.array, src['Mconv5_stage4'][0])
    assert np.array_equal(model.conv6_2_CPM.b.array, src['conv6_2_CPM'][1])
    assert listing(str(tmp_path)) == ['hand.npz']  # no temporary file left behind


def test_original_workflow_from_models_directory(files, tmp_path):
    """The original README: ``cd models; python convert_model.py ARCH IN OUT``."""
    os.symlink(files['vgg'], str(tmp_path / 'VGG_ILSVRC_19_layers.caffemodel'))
    res = testing.run('models/convert_model.py', 'vgg19', 'VGG_ILSVRC_19_layers.caffemodel',
                      'vgg19.npz', cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    with np.load(str(tmp_path / 'vgg19.npz')) as f:
        assert len(f.files) == 2 * len(VGG19_FRONT)
        # V1 stores biases as (1, 1, 1, n): the npz has Chainer's (n,)
        assert f['conv4_2/W'].shape == (512, 512, 3, 3) and f['conv4_2/b'].shape == (512,)


def test_missing_input(tmp_path):
    res = run('posenet', str(tmp_path / 'pose_iter_440000.caffemodel'), str(tmp_path / 'o.npz'))
    one_line_error(res, 'pose_iter_440000.caffemodel: no such file')
    assert listing(str(tmp_path)) == []


def test_truncated_caffemodel(files, tmp_path):
    with open(files['hand'], 'rb') as f:
        data = f.read()
    boundary = os.path.getsize(files['hand_prefix'])
    assert data[:boundary] == open(files['hand_prefix'], 'rb').read()
    rng = np.random.default_rng(5)
    cuts = [1, 17, boundary - 1, boundary, boundary + 5] + list(rng.integers(1, len(data), 4))
    out = str(tmp_path / 'out.npz')
    for cut in cuts:
        path = str(tmp_path / 'cut.caffemodel')
        with open(path, 'wb') as f:
            f.write(data[:cut])
        with pytest.raises(UserError) as e:
            convert_model.convert('handnet', path, out)
        msg = str(e.value)
        assert msg.startswith(path + ': ') and '\n' not in msg
        # mid-message: corrupt; between layers: the first missing layer is named
        assert ('truncated or corrupt Caffe model' in msg
                or (cut == boundary and 'layer %s missing' % files['hand_prefix_next'] in msg
                    and 'holds' not in msg)), (cut, msg)
        assert listing(str(tmp_path)) == ['cut.caffemodel']
    res = run('handnet', path, out)
    one_line_error(res, path, 'truncated or corrupt')
    assert not os.path.exists(out)


def test_face_weights_for_posenet(files, tmp_path):
    out = str(tmp_path / 'coco_posenet.npz')
    res = run('posenet', files['face'], out)
    one_line_error(res, files['face'], 'layer conv4_3_CPM missing',
                   'holds facenet weights')
    res = run('facenet', files['hand'], out)
    one_line_error(res, files['hand'], 'layer conv6_2_CPM: weight has shape (22, 512, 1, 1), '
                   'facenet expects (71, 512, 1, 1)', 'holds handnet weights')
    assert listing(str(tmp_path)) == []


def test_pth_with_missing_or_wrong_shaped_layer(tmp_path):
    out = str(tmp_path / 'hand.npz')
    res = run('handnet', os.path.join(FIXTURES, 'hand_subset.pth'), out)
    one_line_error(res, 'hand_subset.pth: layer conv2_1 missing', '(128, 64, 3, 3)')
    res = run('handnet', os.path.join(FIXTURES, 'hand_wrong_shape.pth'), out)
    one_line_error(res, 'hand_wrong_shape.pth: layer conv1_1: weight has shape (64, 3, 5, 5), '
                   'handnet expects (64, 3, 3, 3)')
    assert listing(str(tmp_path)) == []


def test_pth_calling_os_system_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    cmd = 'touch %s' % marker
    pkl = (b'\x80\x02cos\nsystem\nX' + len(cmd).to_bytes(4, 'little') + cmd.encode() + b'\x85R.')
    evil = str(tmp_path / 'body_pose_model.pth')
    with open(evil, 'wb') as f:
        f.write(pkl)
    res = run('posenet', evil, str(tmp_path / 'o.npz'))
    one_line_error(res, 'body_pose_model.pth: refusing to load', 'os.system',
                   'nothing was executed')
    assert not marker.exists()
    assert listing(str(tmp_path)) == ['body_pose_model.pth']


def test_other_bad_inputs(files, tmp_path):
    out = str(tmp_path / 'o.npz')
    empty = tmp_path / 'empty.caffemodel'
    empty.write_bytes(b'')
    one_line_error(run('handnet', str(empty), out), 'empty.caffemodel: empty file')
    junk = tmp_path / 'junk.caffemodel'
    junk.write_bytes(b'\xff' * 64)
    one_line_error(run('handnet', str(junk), out), 'junk.caffemodel: truncated or corrupt')
    npz = tmp_path / 'already.npz'
    np.savez(str(npz), a=np.zeros(1))
    one_line_error(run('handnet', str(npz), out), 'already.npz: is already an npz')
    one_line_error(run('handnet', str(tmp_path), out), 'is a directory')
    assert not os.path.exists(out)


def test_unwritable_output(files, tmp_path):
    existing = tmp_path / 'existing.npz'
    existing.write_bytes(b'old contents')
    # a failing conversion leaves an existing OUT untouched
    one_line_error(run('facenet', files['hand'], str(existing)), 'conv6_2_CPM')
    assert existing.read_bytes() == b'old contents'
    missing_dir = str(tmp_path / 'no' / 'such' / 'dir' / 'o.npz')
    one_line_error(run('vgg19', files['vgg'], missing_dir), missing_dir, 'does not exist')
    under_file = str(existing / 'o.npz')  # parent is a regular file
    one_line_error(run('vgg19', files['vgg'], under_file), under_file)
    # /proc refuses new files even for root (a chmod'ed directory would not)
    one_line_error(run('vgg19', files['vgg'], '/proc/vgg19.npz'),
                   '/proc/vgg19.npz: cannot write')
    assert listing(str(tmp_path)) == ['existing.npz']


def test_mobilenet_dispatches_to_the_tf_graph_converter(tmp_path):
    from models.MobileNetV2PoseNet import MobileNetV2PoseNet
    out = str(tmp_path / 'mobilenet.npz')
    res = run('mobilenet', tfpose_pb(), out)
    assert res.returncode == 0, res.stderr
    chainer.serializers.load_npz(out, MobileNetV2PoseNet())
    one_line_error(run('mobilenet', str(tmp_path / 'graph_opt.pb'), out),
                   'graph_opt.pb: no such file')


def test_out_is_never_the_input_or_a_device(files, tmp_path):
    """convert_model.py IN IN overwrote its input; OUT /dev/full (here a node with its
    numbers) turned the device into a 147 MB regular file.  Both refused before reading."""
    import shutil
    import stat
    from support.testing import full_device
    src = tmp_path / 'hand.caffemodel'
    shutil.copy(files['hand'], src)
    before = src.read_bytes()
    (tmp_path / 'link.npz').symlink_to(src)
    for out in (src, tmp_path / 'link.npz', tmp_path / '.' / 'hand.caffemodel'):
        one_line_error(run('handnet', str(src), str(out)),
                       'OUT %s is the same file as IN %s' % (out, src))
    dev = tmp_path / 'full'
    full_device(dev)
    one_line_error(run('handnet', str(src), str(dev)),
                   'OUT %s: is a character device, not a regular file' % dev)
    assert src.read_bytes() == before and stat.S_ISCHR(os.stat(dev).st_mode)
    assert listing(str(tmp_path)) == ['full', 'hand.caffemodel', 'link.npz']


def test_full_disk_is_one_line_and_leaves_nothing(files, small_disk):
    """A disk that fills up while the npz is written: one error line (was followed by
    ZipFile.__del__'s 'Exception ignored' traceback), no partial file."""
    out = small_disk.path / 'hand.npz'
    res = run('handnet', files['hand'], out, preexec_fn=small_disk.preexec)
    one_line_error(res, '%s: cannot write (' % out)
    assert 'Exception ignored' not in res.stderr
    assert os.listdir(small_disk.path) == []


def test_nan_in_caffemodel_is_refused_naming_the_layer(tmp_path):
    """Corrupted bytes that decode as NaN / Inf converted without a word."""
    convs = conv_layers('handnet')
    layers = caffe_files.random_conv_weights(convs, seed=5)
    layers[7][1][0].flat[11] = np.nan
    src = str(tmp_path / 'nan.caffemodel')
    caffe_files.write_caffemodel(src, layers)
    one_line_error(run('handnet', src, str(tmp_path / 'o.npz')),
                   'nan.caffemodel: layer %s/W holds 1 NaN or infinite values' % layers[7][0])
    assert listing(str(tmp_path)) == ['nan.caffemodel']
