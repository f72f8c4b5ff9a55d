"""train_coco_pose_estimation.py on coco_mini, on CPU at small insize with the real networks."""
import functools
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import testing
from support.coco_mini import make_coco_dir, make_coco_dir_with_masks
from support.testing import REPO, coco_mini, one_line_error

TRAIN = os.path.join(REPO, 'train_coco_pose_estimation.py')
train = functools.partial(testing.run, 'train_coco_pose_estimation.py')  # this module's script
SMALL = ['--insize', '64', '--batchsize', '4', '--valbatchsize', '2', '--val-samples', '2',
         '--no-progress']


def read_log(out):
    with open(os.path.join(out, 'log')) as f:
        return json.load(f)


def load_all(path):
    """Every array of an npz (fails on a partial file)."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_loss_falls_and_undecodable_images_are_skipped(tmp_path, coco_dir):
    # a copy of the COCO dir whose 196141 image cannot be decoded
    root = make_coco_dir_with_masks(str(tmp_path / 'coco'))
    bad = os.path.join(root, 'train2017', '000000196141.jpg')
    os.remove(bad)  # (a symlink to the shared file)
    with open(bad, 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 truncated')
    out = str(tmp_path / 'out')
    # alpha 1e-3 without decay so that ~40 CPU iterations show learning (default: 1e-4)
    p = train('--arch', 'mobilenet', '--coco-dir', root, '--out', out, '--iteration', '40',
              '--alpha', '1e-3', '--alpha-decay-at', '--log-interval', '5',
              '--snapshot-interval', '20', '--val-interval', '20', '--loaderjob', '2', *SMALL)
    assert p.returncode == 0, p.stderr[-3000:]
    log = read_log(out)
    assert [e['iteration'] for e in log] == list(range(5, 41, 5))
    first, last = log[0]['main/loss'], log[-1]['main/loss']
    assert last <= 0.7 * first, (first, last)
    assert 'validation/main/loss' in log[3] and 'validation/main/loss' in log[-1]
    assert log[-1]['skipped_images'] > 0
    # counted across the two loader processes, each of which warns once
    assert re.search(r'skipped (\d+) undecodable images', p.stdout)
    assert int(re.search(r'skipped (\d+)', p.stdout).group(1)) >= log[-1]['skipped_images']
    assert 1 <= p.stderr.count('cannot decode it') <= 2
    files = set(os.listdir(out))
    assert {'model_iter_20', 'model_iter_40', 'snapshot_iter_20', 'snapshot_iter_40', 'log',
            'loss.png', 'params.json'} <= files
    assert not [f for f in files if f.startswith('tmp')]
    # model_iter_N holds the network alone, ready for pose_detector
    import pose_detector
    model = pose_detector.load_model('mobilenet', os.path.join(out, 'model_iter_40'))
    trained = load_all(os.path.join(out, 'model_iter_40'))
    np.testing.assert_array_equal(model.Conv.W.array, trained['Conv/W'])


def test_kill_then_resume_continues_iteration_and_optimizer_state(tmp_path, coco_dir):
    out = str(tmp_path / 'out')
    args = ['--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', out, '--log-interval', '1',
            '--snapshot-interval', '3', '--val-interval', '100', *SMALL]
    proc = subprocess.Popen([sys.executable, TRAIN, '--iteration', '100'] + args, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, 'snapshot_iter_6')):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # whatever the moment of the kill: every file with a snapshot's name is complete
    snaps = sorted(int(f.split('_')[-1]) for f in os.listdir(out) if f.startswith('snapshot_iter_'))
    assert snaps and snaps[-1] >= 6
    for f in os.listdir(out):
        if f.startswith(('snapshot_iter_', 'model_iter_')):
            load_all(os.path.join(out, f))
    last = snaps[-1]
    state = load_all(os.path.join(out, 'snapshot_iter_%d' % last))
    assert state['updater/iteration'] == last
    assert state['updater/optimizer:main/t'] == last
    # a half-written snapshot a kill can leave in the writer's temporary directory
    stale = os.path.join(out, 'tmpsnapshot_iter_99abcdef')
    os.makedirs(stale)
    with open(os.path.join(stale, 'snapshot_iter_99'), 'wb') as f:
        f.write(b'PK\x03\x04 partial')

    end = last + 2
    p = train('--iteration', str(end), '--resume', out, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'resumed from %s at iteration %d' % (os.path.join(out, 'snapshot_iter_%d' % last),
                                                 last) in p.stdout
    assert not os.path.exists(stale)
    log = read_log(out)
    its = [e['iteration'] for e in log]
    assert its[-2:] == [last + 1, end] and its == sorted(set(its))
    final = load_all(os.path.join(out, 'snapshot_iter_%d' % end))
    assert final['updater/iteration'] == end
    # Adam's step count went on from the snapshot's (a fresh optimizer would be at 2)
    assert final['updater/optimizer:main/t'] == end
    # and a trainer rebuilt with --resume holds exactly the snapshot's Adam moments and weights
    import train_coco_pose_estimation as tcpe
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(
        ['--iteration', str(end + 5), '--resume', os.path.join(out, 'snapshot_iter_%d' % end)]
        + args))
    opt = trainer.updater.get_optimizer('main')
    assert trainer.updater.iteration == end and opt.t == end
    for name, param in opt.target.namedparams():
        for slot in ('m', 'v'):
            np.testing.assert_array_equal(
                param.update_rule.state[slot], final['updater/optimizer:main%s/%s' % (name, slot)])
        np.testing.assert_array_equal(param.array, final['updater/model:main%s' % name])


def fake_vgg19(path):
    """A VGG-19 npz as convert_model.py vgg19 writes it (random values, real shapes)."""
    from models.CocoPoseNet import VGG19_CONVS
    rng = np.random.RandomState(0)
    arrays = {}
    for c in VGG19_CONVS:
        if c != 'pool':
            name, n_in, n_out = c
            arrays[name + '/W'] = rng.normal(0, 0.05, (n_out, n_in, 3, 3)).astype(np.float32)
            arrays[name + '/b'] = rng.normal(0, 0.05, n_out).astype(np.float32)
    np.savez(path, **arrays)
    return arrays


def test_posenet_from_vgg19_front_and_model_iter_loads_in_pose_detector(tmp_path, coco_dir):
    from models.CocoPoseNet import VGG19_FRONT
    vgg = fake_vgg19(str(tmp_path / 'vgg19.npz'))
    out = str(tmp_path / 'out')
    p = train('--arch', 'posenet', '--coco-dir', coco_dir, '--out', out, '--iteration', '1',
              '--initmodel', str(tmp_path / 'vgg19.npz'), '--snapshot-interval', '1',
              '--val-interval', '1', '--log-interval', '1', '--insize', '64', '--batchsize', '1',
              '--valbatchsize', '1', '--val-samples', '1', '--no-progress')
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'initialised posenet from %s (vgg19)' % (tmp_path / 'vgg19.npz') in p.stdout
    model_file = os.path.join(out, 'model_iter_1')
    weights = load_all(model_file)
    for name in VGG19_FRONT:  # copied, and still frozen after an update
        np.testing.assert_array_equal(weights[name + '/W'], vgg[name + '/W'])
    r = testing.run('pose_detector.py', 'posenet', model_file, '--img',
                    coco_mini('000000000785.jpg'), '--scales', '0.25', '--out',
                    tmp_path / 'result.png')
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.exists(tmp_path / 'result.png')


def test_vgg_front_schedule(tmp_path, coco_dir):
    """Frozen for vgg_freeze_iterations, then a quarter of the step (Adam's eta)."""
    import train_coco_pose_estimation as tcpe
    from models.CocoPoseNet import VGG19_FRONT
    from entity import params
    fake_vgg19(str(tmp_path / 'vgg19.npz'))
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(
        ['--arch', 'posenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
         '--initmodel', str(tmp_path / 'vgg19.npz'), *SMALL]))
    model = trainer.updater.get_optimizer('main').target.model
    ext = trainer.get_extension('FreezeSchedule')
    ext.initialize(trainer)
    assert all(not getattr(model, n).update_enabled for n in VGG19_FRONT)
    assert model.conv4_3_CPM.update_enabled
    trainer.updater.iteration = params['vgg_freeze_iterations']
    ext(trainer)
    assert all(getattr(model, n).update_enabled for n in VGG19_FRONT)
    for name, param in model.namedparams():
        slow = name.split('/')[1] in VGG19_FRONT + ['conv4_3_CPM', 'conv4_4_CPM']
        assert param.update_rule.hyperparam.eta == (params['vgg_grad_scale'] if slow else 1.0)
    # the schedule travels in trainer snapshots: a resumed run (no --initmodel) keeps it
    import chainer
    saved = chainer.serializers.DictionarySerializer()
    ext.serialize(saved)
    resumed = tcpe.FreezeSchedule(ext.links, ext.until, active=False)
    resumed.serialize(chainer.serializers.NpzDeserializer(saved.target))
    trainer.updater.iteration = 5
    resumed(trainer)
    assert resumed.active and not model.conv1_1.update_enabled


SHIPPED = os.path.join(REPO, 'models', 'mobilenet_v2_small.npz')


def first_step(argv):
    """A trainer from ``argv`` (--deterministic: batches in dataset order): the loss its
    first update reports (training mode) and the inference-mode loss of that same batch."""
    import chainer
    import train_coco_pose_estimation as tcpe
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(argv + ['--deterministic']))
    loss_chain = trainer.updater.get_optimizer('main').target
    it = trainer.updater.get_iterator('main')
    batch = chainer.dataset.concat_examples([it.dataset[i] for i in range(it.batch_size)])
    with chainer.using_config('train', False):
        inference = float(loss_chain(*batch).array)
    observed = {}
    with trainer.reporter.scope(observed):
        trainer.updater.update()
    return float(observed['main/loss'].array), inference, loss_chain.model


def test_pretrained_training_loss_equals_inference_loss(tmp_path, coco_dir):
    """Fine-tuning (--initmodel) normalises with the stored batch-norm statistics: the first
    training step sees the model as inference does (batch statistics: 1.8 vs 0.075)."""
    from models.MobileNetV2PoseNet import MobileNetV2PoseNet
    import chainer
    shipped = MobileNetV2PoseNet()
    chainer.serializers.load_npz(SHIPPED, shipped)
    argv = ['--arch', 'mobilenet', '--initmodel', SHIPPED, '--coco-dir', coco_dir,
            '--out', str(tmp_path / 'o'), '--insize', '184', '--batchsize', '4']
    train_loss, inference_loss, model = first_step(argv)
    print('first step: training-mode loss %.5f, inference-mode loss %.5f'
          % (train_loss, inference_loss))
    assert inference_loss < 0.15  # the trained model fits the targets (random weights: ~0.3)
    assert abs(train_loss - inference_loss) <= 0.03 * inference_loss
    # the stored statistics are kept (gamma and beta train)
    for name, link in shipped.namedlinks(skipself=True):
        if isinstance(link, chainer.links.BatchNormalization):
            trained = model[name.lstrip('/')]
            np.testing.assert_array_equal(trained.avg_mean, link.avg_mean)
            np.testing.assert_array_equal(trained.avg_var, link.avg_var)
            assert not np.array_equal(trained.beta.array, link.beta.array)
    # --bn-mode batch asks for ordinary batch norm: the batch's own statistics
    train_loss, inference_loss, _ = first_step(argv + ['--bn-mode', 'batch'])
    assert train_loss > 5 * inference_loss


def test_bn_mode_defaults_and_resume(tmp_path, coco_dir):
    """From scratch: batch statistics; --initmodel: frozen; --resume: the mode of the run it
    continues (saved in its snapshot), unless --bn-mode says otherwise."""
    import train_coco_pose_estimation as tcpe

    def frozen(*argv):
        trainer, _ = tcpe.build_trainer(tcpe.parse_args(list(argv) + common))
        return trainer.updater.get_optimizer('main').target.model.frozen_bn_stats

    common = ['--arch', 'mobilenet', '--coco-dir', coco_dir, *SMALL]
    for name, init in (('tuned', ['--initmodel', SHIPPED]), ('scratch', [])):
        out = str(tmp_path / name)
        p = train('--iteration', '1', '--snapshot-interval', '1', '--val-interval', '1',
                  '--out', out, *init, *common)
        assert p.returncode == 0, p.stderr[-3000:]
        assert ('batch norms: frozen statistics' if init else 'batch norms: batch statistics'
                ) in p.stdout
        assert frozen('--out', out, '--resume', out) == bool(init)
        assert frozen('--out', out, '--resume', out, '--bn-mode', 'batch') is False
        assert frozen('--out', out, '--resume', out, '--bn-mode', 'frozen') is True
    assert frozen('--out', str(tmp_path / 'o'), '--initmodel', SHIPPED, '--bn-mode',
                  'batch') is False
    # a snapshot from before the modes: its run used batch statistics, and goes on so
    old = load_all(os.path.join(str(tmp_path / 'tuned'), 'snapshot_iter_1'))
    assert old.pop('extensions/BatchNormMode/frozen')
    np.savez(str(tmp_path / 'old_snapshot.npz'), **old)
    assert frozen('--out', str(tmp_path / 'o'), '--resume', str(tmp_path / 'old_snapshot.npz')
                  ) is False


def test_finetune_shipped_mobilenet_keeps_its_ap(tmp_path, coco_dir):
    """A few fine-tuning iterations on coco_mini keep the model's AP on those images (with
    batch statistics two iterations were enough to find nobody)."""
    import evaluate_coco
    out = str(tmp_path / 'out')
    p = train('--arch', 'mobilenet', '--initmodel', SHIPPED, '--coco-dir', coco_dir, '--out', out,
              '--iteration', '10', '--val-interval', '10', '--log-interval', '5',
              '--snapshot-interval', '10', '--insize', '184', '--batchsize', '4',
              '--valbatchsize', '2', '--val-samples', '2', '--no-progress', '--deterministic')
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'initialised mobilenet from %s (model)' % SHIPPED in p.stdout
    log = read_log(out)
    # the trained weights already fit the targets: a random net's loss is ~0.33
    assert log[-1]['validation/main/loss'] < 0.15 and log[0]['main/loss'] < 0.15
    ann, images = coco_mini('test_coco.json'), coco_mini()
    before = evaluate_coco.evaluate(ann, images, 'mobilenet', SHIPPED, verbose=False)[0]
    after = evaluate_coco.evaluate(ann, images, 'mobilenet', os.path.join(out, 'model_iter_10'),
                                   verbose=False)[0]
    print('coco_mini AP: shipped %.3f, after 10 fine-tuning iterations %.3f' % (before, after))
    assert before > 0.45
    assert abs(after - before) <= 0.05


def test_missing_coco_dir_names_getdata(tmp_path):
    one_line_error(train('--coco-dir', str(tmp_path / 'nope'), '--out', str(tmp_path / 'out'),
                         *SMALL), 'getData.sh')


def test_missing_masks_name_gen_ignore_mask(tmp_path):
    root = make_coco_dir(str(tmp_path / 'coco'))
    one_line_error(train('--coco-dir', root, '--out', str(tmp_path / 'out'), *SMALL),
                   'gen_ignore_mask.py --split train')


def test_corrupt_annotation_json(tmp_path):
    root = make_coco_dir(str(tmp_path / 'coco'))
    ann = os.path.join(root, 'annotations', 'person_keypoints_train2017.json')
    with open(ann, 'r+') as f:
        f.truncate(3000)
    one_line_error(train('--coco-dir', root, '--out', str(tmp_path / 'out'), *SMALL),
                   'corrupt annotation JSON', ann)


def test_gpu_without_cupy_is_one_line_error(tmp_path, coco_dir):
    p = subprocess.run([sys.executable, '-c', 'import sys; sys.modules["cupy"] = None; '
                        'sys.argv[0] = %r; exec(open(%r).read())' % (TRAIN, TRAIN),
                        '--gpu', '0', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o')],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    one_line_error(p, 'CuPy')


def test_bad_initmodel_and_resume(tmp_path, coco_dir):
    junk = tmp_path / 'junk.npz'
    np.savez(str(junk), foo=np.zeros(3))
    p = train('--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
              '--initmodel', str(junk), *SMALL)
    one_line_error(p, 'not a mobilenet model')
    p = train('--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
              '--resume', str(junk), *SMALL)
    one_line_error(p, 'not a snapshot of this training setup')


# ----------------------------------------------------------------------------- VGG-19 caffemodel

@pytest.fixture(scope='module')
def vgg_caffemodel(tmp_path_factory):
    """A VGG-19 caffemodel in the 2014 release's V1 ``layers`` format, random weights of the
    real shapes (the loader checks them): the VGG front plus conv5_1, which must be skipped."""
    from models.CocoPoseNet import VGG19_FRONT
    from support import caffe_files
    from support.cmu_nets import conv_layers
    convs = [c for c in conv_layers('vgg19') if c[0] in set(VGG19_FRONT) | {'conv5_1'}]
    path = str(tmp_path_factory.mktemp('vgg') / 'VGG_ILSVRC_19_layers.caffemodel')
    layers = caffe_files.random_conv_weights(convs, seed=5)
    caffe_files.write_caffemodel(path, layers, v1=True)
    return path, dict(layers)


def test_seed_workflow_starts_from_the_vgg_caffemodel_in_models(tmp_path, vgg_caffemodel):
    """The original README: `wget -P models .../VGG_ILSVRC_19_layers.caffemodel`, then
    `python train_coco_pose_estimation.py`, verbatim, from a checkout holding COCO in coco/."""
    seed = tmp_path / 'checkout'
    (seed / 'models').mkdir(parents=True)
    os.symlink(TRAIN, str(seed / 'train_coco_pose_estimation.py'))  # imports from the repo
    os.symlink(vgg_caffemodel[0], str(seed / 'models' / 'VGG_ILSVRC_19_layers.caffemodel'))
    make_coco_dir_with_masks(str(seed / 'coco'))
    proc = subprocess.Popen([sys.executable, 'train_coco_pose_estimation.py'], cwd=str(seed),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    try:
        # its first line, then 300k iterations of CocoPoseNet at 368: stop it there
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        first = proc.stdout.readline() if ready else '(nothing on stdout in 120 s)'
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert first.strip() == 'initialised posenet from %s (vgg19)' % (
        seed / 'models' / 'VGG_ILSVRC_19_layers.caffemodel'), (first, err[-2000:])
    assert 'random weights' not in err


def test_initmodel_reads_a_vgg_caffemodel(tmp_path, coco_dir, vgg_caffemodel):
    import train_coco_pose_estimation as tcpe
    from models.CocoPoseNet import VGG19_FRONT
    path, layers = vgg_caffemodel
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(
        ['--arch', 'posenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
         '--initmodel', path, *SMALL]))
    model = trainer.updater.get_optimizer('main').target.model
    for name in VGG19_FRONT:
        np.testing.assert_array_equal(getattr(model, name).W.array, layers[name][0])
        np.testing.assert_array_equal(getattr(model, name).b.array, layers[name][1])
    assert trainer.get_extension('FreezeSchedule').active  # the VGG warm-up schedule
    # the mobilenet takes npz files only
    p = train('--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
              '--initmodel', path, *SMALL)
    one_line_error(p, 'not an npz', path)


def test_initmodel_reads_cmus_full_caffemodel(tmp_path, coco_dir):
    """CMU's pose_iter_440000.caffemodel (current ``layer`` format) fine-tunes as a whole."""
    import train_coco_pose_estimation as tcpe
    from support import caffe_files
    from support.cmu_nets import conv_layers
    layers = caffe_files.random_conv_weights(conv_layers('posenet'), seed=9)
    path = str(tmp_path / 'pose_iter_440000.caffemodel')
    caffe_files.write_caffemodel(path, layers)
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(
        ['--arch', 'posenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
         '--initmodel', path, *SMALL]))
    model = trainer.updater.get_optimizer('main').target.model
    for name, (w, b) in layers:
        np.testing.assert_array_equal(getattr(model, name).W.array, w)
        np.testing.assert_array_equal(getattr(model, name).b.array, b)
    assert not trainer.get_extension('FreezeSchedule').active


# ----------------------------------------------------------------------------- outputs, resume

def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for out, why in ((a_file, 'exists and is not a directory'),
                     (a_file / 'sub', 'cannot write there'),
                     ('/proc', 'cannot write there'),
                     ('/proc/result', 'cannot write there')):
        # no COCO directory either: the output is checked first
        p = train('--coco-dir', str(tmp_path / 'no_coco'), '--out', str(out), *SMALL)
        assert one_line_error(p).startswith('error: --out %s: %s' % (out, why)), p.stderr
    assert a_file.read_text() == 'x'


def test_full_disk_at_a_snapshot_is_one_line_and_keeps_the_snapshots(tmp_path, coco_dir):
    """--out on a 16 MB tmpfs (a mount namespace of its own): the files of iteration 1
    (~8 MB) fit, a write at iteration 2 does not."""
    if subprocess.run(['unshare', '-m', 'true'], capture_output=True).returncode:
        if subprocess.run(['unshare', '-rm', 'true'], capture_output=True).returncode:
            pytest.skip('no mount namespace here (unshare -m and -rm fail): cannot make a '
                        'small disk')
        unshare = ['unshare', '-rm']
    else:
        unshare = ['unshare', '-m']
    out = str(tmp_path / 'out')
    os.makedirs(out)
    check = tmp_path / 'check.py'  # run inside the namespace, where the tmpfs is
    check.write_text('import numpy as np, os\nnames = sorted(os.listdir(%r))\nprint(names)\n'
                     'print([int(np.load(os.path.join(%r, n))["updater/iteration"]) for n in '
                     'names if n.startswith("snapshot_iter_")])' % (out, out))
    script = ('mount -t tmpfs -o size=16m tmpfs %s || exit 99; %s %s "$@"; echo "rc=$?"; '
              '%s %s' % (out, sys.executable, TRAIN, sys.executable, check))
    p = subprocess.run(unshare + ['sh', '-c', script, 'sh', '--arch', 'mobilenet',
                                  '--coco-dir', coco_dir, '--out', out, '--iteration', '3',
                                  '--snapshot-interval', '1', '--val-interval', '100',
                                  '--log-interval', '1', '--keep-snapshots', '-1', *SMALL],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    if 'rc=99' in p.stdout or not p.stdout:
        pytest.skip('cannot mount a tmpfs here: %s' % p.stderr[-300:])
    assert 'rc=2' in p.stdout, (p.stdout[-2000:], p.stderr[-3000:])
    assert 'Traceback' not in p.stderr, p.stderr
    error = p.stderr.strip().splitlines()
    assert len(error) == 1, p.stderr
    assert error[0].startswith('error: iteration 2: cannot write in %s (No space left on '
                               'device)' % out), p.stderr
    assert '--resume %s' % out in error[0]
    listing, iterations = p.stdout.strip().splitlines()[-2:]
    assert "'snapshot_iter_1'" in listing and "'model_iter_1'" in listing
    assert 'tmp' not in listing  # the half-written file's temporary directory is gone
    # every snapshot there loads and holds its iteration
    assert iterations in ('[1]', '[1, 2]'), (listing, iterations)


def test_resume_passes_over_a_damaged_newest_snapshot(tmp_path, coco_dir):
    out = str(tmp_path / 'out')
    args = ['--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', out, '--log-interval', '1',
            '--snapshot-interval', '2', '--val-interval', '100', *SMALL]
    p = train('--iteration', '6', *args)
    assert p.returncode == 0, p.stderr[-3000:]
    snap = lambda n: os.path.join(out, 'snapshot_iter_%d' % n)  # noqa: E731
    with open(snap(6), 'r+b') as f:  # cut short (a full disk, a copy that stopped)
        f.truncate(os.path.getsize(snap(6)) // 2)
    with open(snap(4), 'r+b') as f:  # one flipped byte inside an array
        f.seek(os.path.getsize(snap(4)) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xff]))
    p = train('--iteration', '7', '--resume', out, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r'warning: %s is damaged \(.+\): trying the one before'
                     % re.escape(snap(6)), p.stderr), p.stderr
    assert re.search(r'warning: %s is damaged \(bad checksum in .+\)' % re.escape(snap(4)),
                     p.stderr), p.stderr
    assert 'resumed from %s at iteration 2' % snap(2) in p.stdout
    assert load_all(snap(6))['updater/iteration'] == 6  # rewritten by the resumed run
    # a damaged file named explicitly is not replaced by another
    with open(snap(6), 'r+b') as f:
        f.truncate(100)
    p = train('--iteration', '8', '--resume', snap(6), *args)
    one_line_error(p, 'not a snapshot of this training setup')
    for n in (2, 4, 6, 7):  # keep_snapshots 3: every one damaged
        if os.path.exists(snap(n)):
            with open(snap(n), 'r+b') as f:
                f.truncate(100)
    p = train('--iteration', '8', '--resume', out, *args)
    assert one_line_error(p, notes_first=True) == (
        'error: --resume %s: every snapshot_iter_N in it is damaged' % out), p.stderr


def test_initmodel_goes_through_the_nets_npz_checks(tmp_path, coco_dir):
    """--initmodel loads with models.load_weights, as the detectors do: a damaged array is
    refused by name (it trained on NaN before), a wrong shape names the layer, both as one
    line that says which flag; the shipped npz initialises every array as stored."""
    import chainer

    import train_coco_pose_estimation as tcpe
    from models import get_model_class
    with np.load(SHIPPED) as src:
        arrays = {k: src[k] for k in src.files}
    model = get_model_class('mobilenet')()
    assert tcpe.load_initmodel(model, 'mobilenet', SHIPPED) == 'model'
    saver = chainer.serializers.DictionarySerializer()
    saver.save(model)
    stored = saver.target
    assert set(stored) == set(arrays)
    for k, a in arrays.items():
        np.testing.assert_array_equal(stored[k], a, err_msg=k)
    bad = dict(arrays)
    bad['MConv_Stage6_L2_5_pointwise/W'] = bad['MConv_Stage6_L2_5_pointwise/W'].copy()
    bad['MConv_Stage6_L2_5_pointwise/W'].flat[[3, 7]] = np.nan
    np.savez(str(tmp_path / 'nan.npz'), **bad)
    p = train('--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
              '--initmodel', str(tmp_path / 'nan.npz'), *SMALL)
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert p.stderr.startswith('error: --initmodel %s: array MConv_Stage6_L2_5_pointwise/W '
                               'holds 2 NaN' % (tmp_path / 'nan.npz')), p.stderr
    wrong = dict(arrays, **{'Conv/W': np.zeros((3, 3, 3, 3), np.float32)})
    np.savez(str(tmp_path / 'wrong.npz'), **wrong)
    with pytest.raises(tcpe.cli.UserError, match=r'^--initmodel .*wrong\.npz: not mobilenet '
                                                  r'weights: Conv/W has shape \(3, 3, 3, 3\)'):
        tcpe.load_initmodel(get_model_class('mobilenet')(), 'mobilenet',
                            str(tmp_path / 'wrong.npz'))
