"""train_coco_pose_estimation.py --communicator: ChainerMN data-parallel training over MPI.

Two MPI processes on CPU (the ``naive`` communicator) train on coco_mini at a small insize.
Needs Open MPI and mpi4py: installed by ``make mpi`` (this module runs it when they are
missing, and is skipped only when that fails, with the reason).
"""
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import testing
from support.testing import REPO, one_line_error

TRAIN = os.path.join(REPO, 'train_coco_pose_estimation.py')
train = functools.partial(testing.run, 'train_coco_pose_estimation.py')  # one process
MPIEXEC = ['mpiexec', '--allow-run-as-root', '--oversubscribe', '-n', '2']
SMALL = ['--insize', '64', '--valbatchsize', '1', '--val-samples', '2', '--no-progress']


def mpi_problem():
    """Why 2-rank jobs cannot run here (None when they can)."""
    if not shutil.which('mpiexec'):
        return 'mpiexec not found'
    p = subprocess.run([sys.executable, '-c', 'import compat; from mpi4py import MPI; '
                        'import chainermn'],  # compat first: Chainer 7.8.1 on NumPy 2
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    if p.returncode:
        return 'mpi4py does not load in %s: %s' % (
            sys.executable, (p.stderr.strip().splitlines() or ['?'])[-1])
    return None


@pytest.fixture(scope='module')
def mpi():
    why = mpi_problem()
    if why:
        # into the venv running the tests, whichever stack it is
        make = subprocess.run(['make', '-s', '-C', REPO, 'mpi', 'PYTHON=' + sys.executable,
                               'VENV=' + sys.prefix], capture_output=True, text=True,
                              timeout=900)
        lines = [l for l in make.stderr.splitlines() if l.strip() and not l.startswith('make')]
        errors = [l for l in lines if 'error' in l.lower()]
        why = mpi_problem() if make.returncode == 0 else '`make mpi` failed: %s' % (
            (errors or lines or ['exit %d' % make.returncode])[0].strip())
    if why:
        print('skipping the MPI tests: %s' % why, file=sys.stderr)
        pytest.skip('MPI cannot be installed: %s' % why)


def mpirun(*args, timeout=300):
    return subprocess.run(MPIEXEC + [sys.executable, TRAIN, '--communicator', 'naive']
                          + list(args), capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def load_all(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def npz_digest(path):
    """SHA-256 over a saved model's arrays (names, dtypes, shapes, bytes), computed from the
    file: what each rank reports for the weights it holds."""
    h = hashlib.sha256()
    arrays = load_all(path)
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(('%s|%s|%s|' % (key, a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def rank_digests(stdout, when):
    """{rank: sha256} from the lines the ranks print (``when`` e.g. 'after iteration 4')."""
    found = dict(re.findall(r'rank (\d)/2: weights sha256 ([0-9a-f]{64}) \(%s\)'
                            % re.escape(when), stdout))
    assert set(found) == {'0', '1'}, stdout[-3000:]
    return found


def initial_state(argv):
    """The initial weights and each parameter's Adam eta of a --deterministic run."""
    import train_coco_pose_estimation as tcpe
    trainer, _ = tcpe.build_trainer(tcpe.parse_args(argv))
    model = trainer.updater.get_optimizer('main').target.model
    return ({name: p.array.copy() for name, p in model.namedparams()},
            {name: p.update_rule.hyperparam.eta for name, p in model.namedparams()})


def test_two_ranks_step_equals_one_process_with_double_batch(tmp_path, coco_dir, mpi):
    """One Adam step of 2 ranks x 2 images == one process x 4 images (the same 4 images:
    --deterministic fixes the initial weights and augmentation and disables shuffling).
    CocoPoseNet has no batch norm.

    Compared: the averaged gradient (Adam's first moment), then each side's step from its
    own gradient.  Not the stepped weights against each other: Adam's first step is
    alpha * g / (|g| + 3e-7), the sign of each gradient element, which flips where g is 0
    up to rounding.  Nor every array at float32 precision: max pooling and ReLU ties
    (uint8 images have flat regions) can go the other way in a batch of 2 than in one of 4
    and move a few arrays' gradients by ~2e-3 (the same happens in one process summing two
    half batches), the whole gradient by ~4e-5.  A lost or unaveraged rank's gradient moves
    every array by >= 6e-2."""
    common = ['--arch', 'posenet', '--coco-dir', coco_dir, '--iteration', '1',
              '--snapshot-interval', '1', '--val-interval', '100', '--log-interval', '1',
              '--alpha', '1e-4', '--alpha-decay-at', '--deterministic', *SMALL]
    two, one = str(tmp_path / 'two'), str(tmp_path / 'one')
    p = mpirun('--out', two, '--batchsize', '2', *common)
    assert p.returncode == 0, p.stderr[-3000:]
    q = train('--out', one, '--batchsize', '4', *common)
    assert q.returncode == 0, q.stderr[-3000:]
    try:
        assert set(rank_digests(p.stdout, 'after iteration 1').values()) == {
            npz_digest(os.path.join(two, 'model_iter_1'))}
        s2 = load_all(os.path.join(two, 'snapshot_iter_1'))
        s1 = load_all(os.path.join(one, 'snapshot_iter_1'))
    finally:  # ~1.7 GB of CocoPoseNet snapshots
        shutil.rmtree(two, ignore_errors=True)
        shutil.rmtree(one, ignore_errors=True)
    # a real step on both sides (ChainerMN's optimizer would spend step 1 broadcasting)
    assert s2['updater/optimizer:main/t'] == s1['updater/optimizer:main/t'] == 1
    initial, etas = initial_state(['--out', str(tmp_path / 'o'), '--batchsize', '4'] + common)
    assert len(initial) > 100
    beta1, beta2, alpha, eps = 0.9, 0.999, 1e-4, 1e-8
    key = 'updater/optimizer:main/model%s/%s'
    grads = {}
    for s, who in ((s1, 'one process'), (s2, 'two ranks')):
        for name in initial:
            m, v = (s[key % (name, k)].astype(np.float64) for k in 'mv')
            # one step's moments: m = (1 - beta1) g, v = (1 - beta2) g^2
            np.testing.assert_allclose(v, (1 - beta2) * (m / (1 - beta1)) ** 2, rtol=1e-4,
                                       atol=1e-30, err_msg='%s %s' % (who, name))
            grads[who, name] = m / (1 - beta1)
            # the weights moved by Adam's step of that gradient (eta: the VGG layers' quarter)
            step = alpha * np.sqrt(1 - beta2) / (1 - beta1) * m / (np.sqrt(v) + eps)
            after = s['updater/model:main/model%s' % name].astype(np.float64)
            np.testing.assert_allclose(after, initial[name] - etas[name] * step, rtol=0,
                                       atol=1e-7 + 1e-6 * np.abs(initial[name]).max(),
                                       err_msg='%s %s' % (who, name))
    diff = {n: grads['two ranks', n] - grads['one process', n] for n in initial}
    norm = {n: np.linalg.norm(grads['one process', n]) for n in initial}
    total = np.sqrt(sum(np.sum(d ** 2) for d in diff.values()) / sum(v ** 2 for v in
                                                                     norm.values()))
    worst = max(initial, key=lambda n: np.linalg.norm(diff[n]) / norm[n])
    print('gradient of 2 ranks vs 1 process: %.1e of the whole, %.1e of %s'
          % (total, np.linalg.norm(diff[worst]) / norm[worst], worst))
    assert total <= 1e-3
    assert np.linalg.norm(diff[worst]) <= 2e-2 * norm[worst], worst
    # the biases start at zero: after one step they are the step itself
    b = s1['updater/model:main/model/Mconv7_stage6_L1/b']
    assert np.abs(b).max() > 0.5e-4


def test_two_ranks_finetune_keeps_the_batch_norm_statistics(tmp_path, coco_dir, mpi):
    """Fine-tuning on 2 ranks follows the single-process rule: the refinement batch norms
    use (and keep) the stored statistics; ChainerMN's synced batch norm is for --bn-mode
    batch (training from scratch)."""
    import chainer
    from models.MobileNetV2PoseNet import MobileNetV2PoseNet
    shipped = os.path.join(REPO, 'models', 'mobilenet_v2_small.npz')
    out = str(tmp_path / 'out')
    p = mpirun('--arch', 'mobilenet', '--initmodel', shipped, '--coco-dir', coco_dir,
               '--out', out, '--batchsize', '2', '--iteration', '2', '--snapshot-interval', '2',
               '--val-interval', '100', '--log-interval', '1', '--insize', '128',
               '--valbatchsize', '1', '--val-samples', '2', '--no-progress')
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count('batch norms: frozen statistics') == 1, p.stdout
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    assert log[0]['main/loss'] < 0.15, log  # batch statistics: ~1.8
    model = MobileNetV2PoseNet()
    chainer.serializers.load_npz(shipped, model)
    trained = load_all(os.path.join(out, 'model_iter_2'))
    n = 0
    for name, link in model.namedlinks(skipself=True):
        if isinstance(link, chainer.links.BatchNormalization):
            np.testing.assert_array_equal(trained[name[1:] + '/avg_mean'], link.avg_mean)
            np.testing.assert_array_equal(trained[name[1:] + '/avg_var'], link.avg_var)
            n += 1
    assert n == 60


def children(pid):
    with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
        return [int(c) for c in f.read().split()]


def mpi_rank_of(pid):
    try:
        with open('/proc/%d/environ' % pid, 'rb') as f:
            env = dict(kv.split(b'=', 1) for kv in f.read().split(b'\0') if b'=' in kv)
    except OSError:
        return None
    rank = env.get(b'OMPI_COMM_WORLD_RANK')
    return None if rank is None else int(rank)


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def test_killed_rank_stops_the_job_and_resume_continues_on_all_ranks(tmp_path, coco_dir, mpi):
    out = str(tmp_path / 'out')
    args = ['--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', out, '--batchsize', '2',
            '--log-interval', '1', '--snapshot-interval', '2', '--val-interval', '2', *SMALL]
    log = open(str(tmp_path / 'first.log'), 'w')
    proc = subprocess.Popen(MPIEXEC + [sys.executable, TRAIN, '--communicator', 'naive',
                                       '--iteration', '100'] + args,
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, 'snapshot_iter_2')):
            assert proc.poll() is None, open(log.name).read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.1)
        ranks = {mpi_rank_of(c): c for c in children(proc.pid)}
        assert set(ranks) >= {0, 1}, ranks
        os.kill(ranks[1], signal.SIGKILL)
        start = time.time()
        # the whole job ends (mpiexec takes the other rank down), non-zero, without a hang
        rc = proc.wait(timeout=60)
        assert rc != 0
        assert time.time() - start < 60
        deadline = time.time() + 10
        while alive(ranks[0]) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(ranks[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    snaps = sorted(int(f.split('_')[-1]) for f in os.listdir(out)
                   if f.startswith('snapshot_iter_'))
    assert snaps and snaps[-1] >= 2
    last = snaps[-1]
    end = last + 2
    p = mpirun('--iteration', str(end), '--resume', out, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'resumed from %s at iteration %d' % (os.path.join(out, 'snapshot_iter_%d' % last),
                                                 last) in p.stdout
    # both ranks loaded the same snapshot, and after training hold the same weights: the
    # ones rank 0 wrote to model_iter_<end>
    resumed = rank_digests(p.stdout, 'after resuming at iteration %d' % last)
    assert resumed['0'] == resumed['1']
    final = rank_digests(p.stdout, 'after iteration %d' % end)
    assert final['0'] == final['1'] == npz_digest(os.path.join(out, 'model_iter_%d' % end))
    assert final['0'] != resumed['0']
    with open(os.path.join(out, 'log')) as f:
        entries = json.load(f)
    its = [e['iteration'] for e in entries]
    assert its[-2:] == [last + 1, end] and its == sorted(set(its))
    assert 'validation/main/loss' in entries[-1]
    state = load_all(os.path.join(out, 'snapshot_iter_%d' % end))
    assert state['updater/iteration'] == end
    assert state['updater/optimizer:main/t'] == end  # Adam went on from the snapshot
    # rank 0 alone wrote: one log line per iteration, no stray temporaries
    assert not [f for f in os.listdir(out) if f.startswith('tmp')]
    assert p.stdout.count('resumed from') == 1

    # a snapshot of 2 ranks goes on in one process (each rank's data order has half the
    # images: the pass over the data restarts, weights and Adam state carry over)
    q = train('--iteration', end + 1, '--resume', out, *args)
    assert q.returncode == 0, q.stderr[-3000:]
    assert 'another number of processes' in q.stdout
    assert load_all(os.path.join(out, 'snapshot_iter_%d' % (end + 1)))[
        'updater/optimizer:main/t'] == end + 1


def test_error_on_one_rank_ends_the_job(tmp_path, coco_dir, mpi):
    """Rank 0 fails (no such snapshot) while rank 1 waits for it: one error line, exit 2,
    no hang."""
    start = time.time()
    p = mpirun('--arch', 'mobilenet', '--coco-dir', coco_dir, '--out', str(tmp_path / 'o'),
               '--resume', str(tmp_path / 'nope'), *SMALL, timeout=120)
    assert p.returncode == 2
    assert 'error: --resume %s: no such file' % (tmp_path / 'nope') in p.stderr
    assert time.time() - start < 60


def test_missing_mpi4py_names_make_target(tmp_path, coco_dir):
    p = subprocess.run([sys.executable, '-c', 'import sys; sys.modules["mpi4py"] = None; '
                        'sys.argv[0] = %r; exec(open(%r).read())' % (TRAIN, TRAIN),
                        '--communicator', 'naive', '--coco-dir', coco_dir,
                        '--out', str(tmp_path / 'o')],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    one_line_error(p, 'make mpi', 'mpi4py')


def test_gpu_communicator_without_cupy_is_one_line_error(tmp_path, coco_dir, mpi):
    p = subprocess.run([sys.executable, '-c', 'import sys; sys.modules["cupy"] = None; '
                        'sys.argv[0] = %r; exec(open(%r).read())' % (TRAIN, TRAIN),
                        '--communicator', 'pure_nccl', '--coco-dir', coco_dir,
                        '--out', str(tmp_path / 'o')],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    one_line_error(p, 'CuPy', '--communicator naive')


def test_mpiexec_without_communicator_is_refused(tmp_path, coco_dir):
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE='2')
    one_line_error(train('--coco-dir', coco_dir, '--out', tmp_path / 'o', timeout=60, env=env),
                   '--communicator naive')
    assert not os.path.exists(tmp_path / 'o')


def test_single_process_does_not_import_chainermn(tmp_path, coco_dir):
    code = ('import sys; sys.path.insert(0, %r); import train_coco_pose_estimation as t; '
            't.build_trainer(t.parse_args(["--arch", "mobilenet", "--coco-dir", %r, "--out", %r,'
            ' "--batchsize", "2", "--no-progress"])); '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("chainermn", "mpi4py")))'
            % (REPO, coco_dir, str(tmp_path / 'o')))
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == '[]'
