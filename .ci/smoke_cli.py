"""Every command-line script once, end to end, on small real inputs: CI runs this on the
current stack with OpenCV 5 in place of 4.14 (the suite itself needs OpenCV 4's cv2.dnn
importers as its reference).  Each check asserts what a user would look at: exit status,
the files written and what they hold, one-line errors on bad input.

    PYTHONPATH=DIR_WITH_OPENCV5 .venv/bin/python .ci/smoke_cli.py [CHECK-NAME-PART ...]
"""
import json
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]
import compat  # noqa: E402,F401  (before chainer)
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from support import caffe_files, testing  # noqa: E402
from support.cmu_nets import conv_layers  # noqa: E402
from support.coco_mini import make_coco_dir  # noqa: E402
from support.testing import (coco_mini, one_line_error, read_video, shared_path,  # noqa: E402
                             tfpose_pb)

RESULTS = []


def run(*args, status=0):
    r = testing.run(*args, timeout=600)
    assert r.returncode == status, 'exit %d: %s' % (r.returncode, (r.stderr or r.stdout)[-2000:])
    if status == 0:
        assert 'Traceback' not in r.stderr and not re.search(r'\w+Warning: ', r.stderr), r.stderr
    return r


def check(name, fn, *args):
    t = time.perf_counter()
    try:
        fn(*args)
        RESULTS.append(True)
        print('ok    %-40s %5.1f s' % (name, time.perf_counter() - t), flush=True)
    except Exception as e:  # report every failure, then fail the run
        RESULTS.append(False)
        print('FAIL  %-40s %s' % (name, str(e).strip().replace('\n', '\n      ')), flush=True)


def people(path):
    with open(path) as f:
        return json.load(f)['people']


def random_net(tmp, arch, seed):
    """A random-weight CMU caffemodel (tests/support/cmu_nets.py), converted by
    convert_model.py (the conversion CLI); the npz path."""
    layers = caffe_files.random_conv_weights(conv_layers(arch), seed=seed)
    caffemodel, npz = os.path.join(tmp, arch + '.caffemodel'), os.path.join(tmp, arch + '.npz')
    caffe_files.write_caffemodel(caffemodel, layers)
    run('convert_model.py', arch, caffemodel, npz)
    with np.load(npz) as z:
        assert len(z.files) == 2 * len(layers), (len(z.files), len(layers))
    os.remove(caffemodel)
    return npz


def main():
    print('smoke pass: Python %s, NumPy %s, OpenCV %s (%s)'
          % (sys.version.split()[0], np.__version__, cv2.__version__, cv2.__file__), flush=True)
    tmp = tempfile.mkdtemp(prefix='smoke_cli.')
    img = coco_mini('000000000785.jpg')
    t = lambda name: os.path.join(tmp, name)  # noqa: E731
    nets = {}

    def net(kind):  # random face/hand nets, converted once (by the conversion check or here)
        if kind not in nets:
            nets[kind] = random_net(tmp, kind + 'net', len(nets) + 1)
        return nets[kind]

    def image_detector():
        run('pose_detector.py', '--img', img, '--out', t('pose.png'), '--json', t('pose.json'))
        assert cv2.imread(t('pose.png')).shape == cv2.imread(img).shape
        (person,) = people(t('pose.json'))  # the skier
        assert np.count_nonzero(np.reshape(person['pose_keypoints_2d'], (18, 3))[:, 2]) >= 12
        one_line_error(run('pose_detector.py', '--img', t('missing.jpg'), status=2),
                       'missing.jpg', notes_first=True)

    def conversion():
        net('face'), net('hand')
        run('convert_model.py', 'mobilenet', tfpose_pb(), t('mobilenet.npz'))
        with np.load(t('mobilenet.npz')) as a, \
                np.load(os.path.join(REPO, 'models', 'mobilenet_v2_small.npz')) as b:
            assert sorted(a.files) == sorted(b.files)
            assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a.files)

    def face_and_hand():
        face = shared_path('images', 'face.png')
        run('face_detector.py', 'facenet', net('face'), '--img', face, '--net-resolution', '128',
            '--out', t('face.png'), '--json', t('face.json'))
        assert len(people(t('face.json'))[0]['face_keypoints_2d']) == 70 * 3
        run('hand_detector.py', 'handnet', net('hand'), '--img', shared_path('images', 'hand.png'),
            '--net-resolution', '128', '--out', t('hand.png'), '--json', t('hand.json'))
        assert cv2.imread(t('hand.png')) is not None

    def whole_body_demo():
        run('demo.py', '--img', shared_path('images', 'dinner.png'), '--face-weights', net('face'),
            '--hand-weights', net('hand'), '--scales', '1', '--face-net-resolution', '128',
            '--hand-net-resolution', '128', '--out', t('demo.png'), '--json', t('demo.json'))
        found = people(t('demo.json'))
        assert found and len(found[0]['face_keypoints_2d']) == 70 * 3

    def video():
        src = t('in.mp4')
        vw = cv2.VideoWriter(src, cv2.VideoWriter_fourcc(*'mp4v'), 5.0, (320, 240))
        for name in ('000000000785.jpg', '000000040083.jpg', '000000197388.jpg'):
            frame = cv2.imread(coco_mini(name))
            vw.write(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))
        vw.release()
        r = run('camera_pose_demo.py', '--video', src, '--no-display', '--out', t('out.mp4'),
                '--json-dir', t('json'))
        assert r.stdout.strip().splitlines()[-1].startswith('done: 3 frames, 0 skipped')
        assert len(read_video(t('out.mp4'))) == 3
        assert sorted(os.listdir(t('json'))) == ['in_%012d_keypoints.json' % i for i in range(3)]
        assert people(os.path.join(t('json'), 'in_000000000000_keypoints.json'))  # the skier
        face_demo = ('camera_face_demo.py', '--video', src, '--weights', net('face'),
                     '--net-resolution', '128', '--no-display', '--out', t('faces.mp4'))
        if hasattr(cv2, 'CascadeClassifier'):
            run(*face_demo)
            assert len(read_video(t('faces.mp4'))) == 3
        else:  # OpenCV 5 without contrib: no Haar cascades, and a line saying what to install
            one_line_error(run(*face_demo, status=2), 'pip install opencv-contrib-python-headless',
                           notes_first=True)
        one_line_error(run('camera_pose_demo.py', '--video', t('missing.mp4'), '--no-display',
                           status=2), 'missing.mp4', notes_first=True)

    def folder():
        os.mkdir(t('frames'))
        for name in ('000000000785.jpg', '000000040083.jpg'):
            os.symlink(coco_mini(name), os.path.join(t('frames'), name))
        with open(os.path.join(t('frames'), 'notes.txt'), 'w') as f:
            f.write('not an image')
        r = run('camera_pose_demo.py', '--images', t('frames'), '--no-display', '--json-dir',
                t('fjson'), '--out', t('frames.avi'))
        assert r.stdout.strip().splitlines()[-1].startswith('done: 2 frames, 1 skipped')
        assert sorted(os.listdir(t('fjson'))) == ['000000000785_keypoints.json',
                                                  '000000040083_keypoints.json']
        assert len(read_video(t('frames.avi'))) == 2

    def training():
        coco = make_coco_dir(t('coco'))
        run('gen_ignore_mask.py', '--coco-dir', coco, '--no-progress')
        assert len(os.listdir(os.path.join(coco, 'ignore_mask_train2017'))) >= 1
        run('coco_data_loader.py', '--coco-dir', coco, '--insize', '128', '-n', '2', '--out',
            t('check'))
        assert len(os.listdir(t('check'))) == 2
        run('train_coco_pose_estimation.py', '--arch', 'mobilenet', '--coco-dir', coco,
            '--out', t('train'), '--iteration', '4', '--insize', '64', '--batchsize', '2',
            '--valbatchsize', '1', '--val-samples', '1', '--log-interval', '2',
            '--snapshot-interval', '4', '--val-interval', '4', '--no-progress')
        with open(os.path.join(t('train'), 'log')) as f:
            assert [e['iteration'] for e in json.load(f)] == [2, 4]
        run('plot_train_log.py', os.path.join(t('train'), 'log'), '--out', t('loss.png'))
        assert cv2.imread(t('loss.png')) is not None
        run('pose_detector.py', 'mobilenet', os.path.join(t('train'), 'model_iter_4'), '--img',
            img, '--out', t('trained.png'))
        run('evaluate_coco.py', '--ann', os.path.join(coco, 'annotations',
                                                      'person_keypoints_val2017.json'),
            '--img-dir', os.path.join(coco, 'val2017'), '--scales', '1', '--out', t('res.json'))
        with open(t('res.json')) as f:
            assert json.load(f)

    def onnx():
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print('      (onnxruntime not installed: export_onnx.py not run)')
            return
        run('export_onnx.py', 'mobilenet', os.path.join(REPO, 'models', 'mobilenet_v2_small.npz'),
            t('m.onnx'))
        run('pose_detector.py', 'mobilenet', t('m.onnx'), '--backend', 'onnx', '--img', img,
            '--out', t('onnx.png'), '--json', t('onnx.json'))
        assert len(people(t('onnx.json'))) == len(people(t('pose.json')))

    only = sys.argv[1:]  # names (or parts of them) of the checks to run; default all
    for name, fn in [('pose_detector.py (image)', image_detector),
                     ('convert_model.py (caffemodel, .pb)', conversion),
                     ('face_detector.py, hand_detector.py', face_and_hand),
                     ('demo.py (body, faces, hands)', whole_body_demo),
                     ('camera_pose/face_demo.py --video', video),
                     ('camera_pose_demo.py --images', folder),
                     ('training scripts, evaluate_coco.py', training),
                     ('export_onnx.py, --backend onnx', onnx)]:
        if not only or any(o in name for o in only):
            check(name, fn)
    failed = RESULTS.count(False)
    print('smoke: %d passed, %d failed' % (RESULTS.count(True), failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
