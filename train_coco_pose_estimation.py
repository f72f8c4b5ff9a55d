"""Train a PAF body-pose network (CocoPoseNet or MobileNetV2PoseNet) on COCO 2017.

Built on Chainer's training machinery: ``CocoDataLoader`` datasets, Serial/Multiprocess
iterators, ``StandardUpdater`` with a loss chain, ``Evaluator`` for the validation loss,
``LogReport`` / ``PrintReport`` / ``PlotReport`` / ``ProgressBar``, and the snapshot
extensions (which write to a temporary directory and rename, so no partial snapshot ever
carries a snapshot's name).

Every ``--snapshot-interval`` iterations (default 1000) the out directory gets
``model_iter_N`` (the network's weights: ``pose_detector.py posenet model_iter_N --img ...``)
and ``snapshot_iter_N`` (the whole trainer: model, Adam state, iterator position, log) for
``--resume``.

Loss: for every stage, the squared error of PAFs and heatmaps against the targets, ignoring
cells under the ignore mask, averaged over all elements; summed over the stages.
Optimiser: Adam, alpha 1e-4 divided by 10 after 1/3 and 2/3 of the iterations (100k and 200k
of the default 300k, as the original).  CocoPoseNet started from VGG-19 (``--initmodel
vgg19.npz``) keeps the VGG layers frozen for the first 2000 iterations, then trains them at
a quarter of the learning rate.

Several processes (``mpiexec -n N ... --communicator naive|pure_nccl``): data-parallel
training with ChainerMN.  Each rank takes its share of the training and validation images,
computes the loss of its ``--batchsize`` images, and ChainerMN's multi-node optimizer averages
the gradients before every Adam step (so N ranks x B images step like one process with N*B
images); batch norms (MobileNet's refinement stages) use the statistics of the whole global
batch.  Rank 0 alone writes the log, plots and snapshots; ``--resume`` is read by rank 0 and
broadcast, so every rank starts from the same state.  ``pure_nccl`` puts rank r of a machine
on its GPU r; ``naive`` works on CPUs.  ChainerMN and mpi4py are imported only with
``--communicator``.
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import functools
import os
import re
import shutil
import sys
import warnings
import zipfile

import numpy as np

import cli
from entity import params

os.environ.setdefault('MPLBACKEND', 'Agg')  # PlotReport on headless machines


# ----------------------------------------------------------------------------- loss

def masked_l2(ys, t, weight):
    """Mean over all elements of (y - t)^2 where ``weight`` is 1 (0 = ignored)."""
    import chainer.functions as F
    if ys.shape != t.shape:
        raise cli.UserError('network output %s does not match the target maps %s: --insize '
                            'must give a stride-%d output' % (ys.shape, t.shape,
                                                              params['downscale']))
    return F.sum(F.square(ys - t) * weight) / ys.size


def make_loss_chain(model, norm):
    import chainer

    import body_maps

    class PoseLoss(chainer.Chain):
        """The training objective around ``model``; reports loss, paf and heat."""

        def __init__(self):
            super().__init__()
            with self.init_scope():
                self.model = model
            self.norm = norm

        def forward(self, imgs, pafs_t, heatmaps_t, ignore_mask):
            xp = chainer.backend.get_array_module(imgs)
            x = body_maps.to_net_input(imgs, self.norm)  # as inference prepares it
            weight = (1 - ignore_mask.astype(xp.float32))[:, None]
            paf_w = xp.broadcast_to(weight, pafs_t.shape)
            heat_w = xp.broadcast_to(weight, heatmaps_t.shape)
            pafs_ys, heatmaps_ys = self.model(x)
            paf_loss = sum(masked_l2(y, pafs_t, paf_w) for y in pafs_ys)
            heat_loss = sum(masked_l2(y, heatmaps_t, heat_w) for y in heatmaps_ys)
            loss = paf_loss + heat_loss
            chainer.report({'loss': loss, 'paf': paf_loss, 'heat': heat_loss}, self)
            return loss

    return PoseLoss()


# ----------------------------------------------------------------------------- extensions

class AlphaSchedule(object):
    """Adam alpha = init * gamma ** (number of steps passed), from the updater's iteration.

    Chainer's MultistepShift counts its own calls and resets alpha to ``init`` in
    ``initialize``, so the first iteration after ``--resume`` past a step ran at the wrong
    rate; computing from the iteration is exact after a resume.
    """
    trigger = (1, 'iteration')
    priority = 300  # PRIORITY_WRITER: before the log reads 'alpha'
    name = 'AlphaSchedule'

    def __init__(self, init, steps, gamma=0.1):
        self.init, self.steps, self.gamma = init, sorted(steps), gamma

    def value(self, iteration):
        return self.init * self.gamma ** sum(1 for s in self.steps if iteration >= s)

    def initialize(self, trainer):
        self(trainer)

    def __call__(self, trainer):
        trainer.updater.get_optimizer('main').alpha = self.value(trainer.updater.iteration)


class FreezeSchedule(object):
    """Keep ``links`` frozen while the iteration is below ``until`` (VGG warm-up).

    ``active`` (the run started from ImageNet VGG-19 weights) is saved in trainer snapshots,
    so a ``--resume``d run keeps the schedule of the run it continues.
    """
    trigger = (1, 'iteration')
    priority = 300
    name = 'FreezeSchedule'

    def __init__(self, links, until, active):
        self.links, self.until, self.active = links, until, active

    def initialize(self, trainer):
        self(trainer)

    def __call__(self, trainer):
        frozen = self.active and trainer.updater.iteration < self.until
        for link in self.links:
            if frozen:
                link.disable_update()
            else:
                link.enable_update()

    def serialize(self, serializer):
        self.active = bool(serializer('active', self.active))


class AggregateObservations(object):
    """Multi-process job: the log shows the loss of the global batch (``mean`` keys: mean
    over ranks) and the images all ranks skipped (``total`` keys: sum), in one exchange.

    (ChainerMN's ObservationAggregator fails on reported Variables when ChainerX is not
    built: it calls ``Variable.to_device('native')``.)  Every rank observes the same keys
    at the same iterations, so the exchanges line up.
    """
    trigger = (1, 'iteration')
    priority = 200  # PRIORITY_EDITOR: after the writers, before LogReport reads
    name = 'AggregateObservations'

    def __init__(self, comm, mean, total):
        self.comm, self.mean, self.total = comm, mean, total

    def __call__(self, trainer):
        import chainer
        obs = trainer.observation
        keys = [k for k in self.mean + self.total if k in obs]
        if not keys:
            return
        local = np.array([float(chainer.backend.CpuDevice().send(
            obs[k].array if isinstance(obs[k], chainer.Variable) else obs[k])) for k in keys])
        summed = self.comm.allreduce_obj(local)
        for k, v in zip(keys, summed):
            obs[k] = v / self.comm.size if k in self.mean else int(v)


# ----------------------------------------------------------------------------- setup

def load_initmodel(model, arch, path):
    """Initialise ``model`` from ``path``; returns 'model' (all its weights: fine-tuning) or
    'vgg19' (posenet's VGG-19 front, ImageNet weights).

    ``path``: an npz of ``arch`` (model_iter_N, convert_model.py's output) or of VGG-19, or
    for posenet a Caffe ``.caffemodel`` / pytorch-openpose ``.pth``: CMU's COCO model or the
    ImageNet ``VGG_ILSVRC_19_layers.caffemodel``, read directly (under a second).
    """
    if not os.path.isfile(path):
        raise cli.UserError('--initmodel %s: no such file' % path)
    import weights_io
    if weights_io.sniff(path) != 'npz':
        return load_initmodel_layers(model, arch, path)
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
    except (OSError, ValueError) as e:
        raise cli.UserError('--initmodel %s: not a readable npz file (%s)' % (path, e))
    names = [n.lstrip('/') for n, _ in model.namedparams()]
    if all(n in keys for n in names):
        from models import load_weights
        try:
            load_weights(model, path, arch)  # the nets' one npz loader and its checks
        except cli.UserError as e:
            raise cli.UserError('--initmodel %s' % e)
        return 'model'
    if arch == 'posenet':
        from models.CocoPoseNet import copy_vgg19_front
        copy_vgg19_front(model, path)
        return 'vgg19'
    missing = [n for n in names if n not in keys]
    raise cli.UserError('--initmodel %s: not a %s model (%d of its %d arrays missing, e.g. %s)'
                        % (path, arch, len(missing), len(names), missing[0]))


def load_initmodel_layers(model, arch, path):
    """``load_initmodel`` for Caffe / PyTorch files (convert_model.py's readers and checks)."""
    import convert_model
    import weights_io
    if arch != 'posenet':
        weights_io.sniff(path)  # a directory or an unreadable file: its own message
        raise cli.UserError('--initmodel %s: not an npz; %s starts from an npz of its own '
                            'weights (convert_model.py %s ... makes one)' % (path, arch, arch))
    every = convert_model.expected_layers('posenet')
    layers = weights_io.read_layers(path, wanted=set(every))
    if all(n in layers for n in every):
        arrays = convert_model.check_layers('posenet', layers, path)
        for name, array in arrays.items():
            link, attr = name.split('/')
            getattr(model[link], attr).array[...] = array
        return 'model'
    from models.CocoPoseNet import copy_vgg19_front
    copy_vgg19_front(model, convert_model.check_layers('vgg19', layers, path), path)
    return 'vgg19'


def default_initmodel(arch):
    """The ImageNet VGG-19 weights a posenet starts from when --initmodel is not given: the
    converted npz, else the caffemodel itself (the original README's ``wget -P models``)."""
    if arch != 'posenet':
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    for name in (params['vgg19_weights'], params['vgg19_caffemodel']):
        if os.path.isfile(os.path.join(here, name)):
            return os.path.join(here, name)
    return None


def batch_norm_links(model):
    """The batch normalisations of ``model`` (plain or ChainerMN's multi-node ones)."""
    import chainer
    kinds = (chainer.links.BatchNormalization,)
    if 'chainermn' in sys.modules:
        kinds += (sys.modules['chainermn'].links.MultiNodeBatchNormalization,)
    return [link for link in model.links() if isinstance(link, kinds)]


class BatchNormMode(object):
    """Batch norms of trained weights keep the statistics the weights were fitted to.

    ``frozen``: the model normalises with the stored statistics in training too (no batch
    statistics, nothing overwritten; see MobileNetV2PoseNet.frozen_bn_stats); gamma and beta
    are still trained (fine-tuning measured a little better with them than without).
    Otherwise ordinary batch norm.  Saved in trainer snapshots, so a ``--resume``d run keeps
    the mode of the run it continues unless ``explicit``.
    """
    trigger = (1, 'iteration')
    priority = 300
    name = 'BatchNormMode'

    def __init__(self, model, frozen, explicit, verbose):
        self.model, self.frozen, self.explicit, self.verbose = model, frozen, explicit, verbose
        self.apply()

    def apply(self):
        self.model.frozen_bn_stats = self.frozen

    def initialize(self, trainer):
        self.apply()
        if self.verbose:
            print('batch norms: %s' % ('frozen statistics (those of the trained weights)'
                                       if self.frozen else 'batch statistics'))

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        try:
            saved = bool(serializer('frozen', self.frozen))
        except KeyError:  # a snapshot from before the modes existed: its runs used batch
            saved = False
        if not self.explicit:
            self.frozen = saved
        self.apply()


def snapshot_damage(path):
    """Why the trainer snapshot ``path`` cannot be loaded (truncated, a bad checksum, no
    iteration count), or None when it is intact.  Reads every byte (CRC of every array)."""
    try:
        with zipfile.ZipFile(path) as z:
            if 'updater/iteration.npy' not in z.namelist():
                return 'no updater/iteration in it'
            bad = z.testzip()
            if bad is not None:
                return 'bad checksum in %s' % bad
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def latest_snapshot(path):
    """``path`` itself, or the newest intact snapshot_iter_N inside the directory ``path``
    (damaged newer ones, e.g. from a full disk or a copy cut short, are passed over, saying
    so)."""
    if os.path.isdir(path):
        found = sorted(((int(m.group(1)), f) for f in os.listdir(path)
                        for m in [re.fullmatch(r'snapshot_iter_(\d+)', f)] if m), reverse=True)
        if not found:
            raise cli.UserError('--resume %s: no snapshot_iter_N in this directory' % path)
        for _, name in found:
            snapshot = os.path.join(path, name)
            damage = snapshot_damage(snapshot)
            if damage is None:
                return snapshot
            print('warning: %s is damaged (%s): trying the one before' % (snapshot, damage),
                  file=sys.stderr)
        raise cli.UserError('--resume %s: every snapshot_iter_N in it is damaged' % path)
    if not os.path.isfile(path):
        raise cli.UserError('--resume %s: no such file' % path)
    return path


def remove_stale_temporaries(out):
    """Temporary directories a killed run left behind (the snapshot and log writers write
    into tmp<name>*/ or log*/ and rename; a kill -9 can leave them half-written)."""
    for f in os.listdir(out):
        p = os.path.join(out, f)
        if os.path.isdir(p) and (re.match(r'tmp(snapshot|model)_iter_\d+', f)
                                 or re.fullmatch(r'log\w{8}', f)):
            shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- ChainerMN

# ``naive`` runs anywhere (CPU or GPU arrays, plain MPI); the others need CuPy (and NCCL).
COMMUNICATORS = ('naive', 'pure_nccl', 'flat', 'hierarchical', 'two_dimensional', 'single_node')


def mpi_world_size():
    """Processes started by mpiexec/srun (1 when not launched by an MPI runtime)."""
    for key in ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'MV2_COMM_WORLD_SIZE'):
        if os.environ.get(key, '').isdigit():
            return int(os.environ[key])
    return 1


def create_communicator(name):
    """A ChainerMN communicator; chainermn and mpi4py are imported only here."""
    try:
        from mpi4py import MPI  # noqa: F401  (initialises MPI; fails without libmpi)
    except (ImportError, RuntimeError, OSError) as e:
        raise cli.UserError('--communicator %s needs MPI and mpi4py (%s): install them with '
                            '`make mpi`' % (name, str(e).splitlines()[0] if str(e) else
                                            type(e).__name__))
    if name != 'naive':
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise cli.UserError('--communicator %s runs on GPUs and needs CuPy with NCCL (pip '
                                'install cupy-cuda12x matching your CUDA); on CPU use '
                                '--communicator naive' % name)
    import chainermn
    import chainermn.global_except_hook
    # an uncaught exception on one rank aborts the whole job (mpi4py's MPI_Finalize at exit
    # would otherwise wait for ranks blocked in a collective: a hang)
    chainermn.global_except_hook.add_hook()
    try:
        return chainermn.create_communicator(name)
    except Exception as e:  # NCCL/CUDA set-up failures come as many types
        raise cli.UserError('--communicator %s: cannot create it (%s: %s)'
                            % (name, type(e).__name__, str(e).splitlines()[0] if str(e) else ''))


def scatter(dataset, comm, shuffle):
    """This rank's part of ``dataset`` (equal lengths on all ranks, as the multi-node
    updater and evaluator need).  Every rank builds the dataset itself from the COCO
    directory and takes its index range (``chainermn.datasets.scatter_index``):
    ``scatter_dataset`` would pickle the whole dataset from rank 0, and the loader's shared
    skipped-image counter cannot be pickled outside process start-up."""
    import chainer
    import chainermn
    begin, end = chainermn.datasets.scatter_index(len(dataset), comm)
    order = None
    if shuffle:
        order = comm.bcast_obj(np.random.permutation(len(dataset)) if comm.rank == 0 else None)
    return chainer.datasets.SubDataset(dataset, begin, end, order)


def weights_digest(model):
    """SHA-256 of every array ``model_iter_N`` would hold (names, dtypes, shapes, bytes)."""
    import hashlib
    import chainer
    s = chainer.serializers.DictionarySerializer()
    s.save(model)
    h = hashlib.sha256()
    for key in sorted(s.target):
        a = np.ascontiguousarray(chainer.backend.CpuDevice().send(s.target[key]))
        h.update(('%s|%s|%s|' % (key, a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_same_weights(comm, model, when):
    """Print this rank's weights digest; fail (every rank) if the ranks differ."""
    digest = weights_digest(model)
    print('rank %d/%d: weights sha256 %s (%s)' % (comm.rank, comm.size, digest, when),
          flush=True)
    digests = comm.mpi_comm.allgather(digest)
    if len(set(digests)) != 1:
        raise cli.UserError('the %d ranks hold different weights %s (sha256 %s)'
                            % (comm.size, when, ', '.join(d[:12] for d in digests)))


def build_trainer(args, model=None, comm=None):
    """The configured ``Trainer`` (and the training dataset); ``model`` overrides --arch.

    ``comm`` (a ChainerMN communicator): this process is one rank of a data-parallel job.
    """
    import chainer
    from chainer import training
    from chainer.training import extensions
    import coco_data_loader
    from models import get_model_class
    rank0 = comm is None or comm.rank == 0

    if args.arch not in params['pose_archs']:
        raise cli.UserError('--arch %s: not a body-pose architecture (choose from %s)'
                            % (args.arch, ', '.join(sorted(params['pose_archs']))))
    arch = params['pose_archs'][args.arch]
    stride = params['downscale']
    if args.insize <= 0 or args.insize % stride:
        raise cli.UserError('--insize %d must be a positive multiple of %d'
                            % (args.insize, stride))
    cli.get_array_module(args.gpu)  # clear message when CuPy or the GPU is missing
    device = chainer.get_device('@numpy' if args.gpu < 0 else '@cupy:%d' % args.gpu)
    if rank0:  # before minutes of work, not at the first snapshot
        cli.ensure_output_dir(args.out, '--out')

    # data first: a missing COCO directory or mask is reported before building the net
    train = coco_data_loader.CocoDataLoader(args.coco_dir, 'train', args.insize,
                                            deterministic=args.deterministic,
                                            pad_value=arch['pad_value'])
    val = coco_data_loader.CocoDataLoader(args.coco_dir, 'val', args.insize, augment=True,
                                          deterministic=True, n_samples=args.val_samples,
                                          pad_value=arch['pad_value'])
    shuffle = not args.deterministic
    train_data, val_data = train, val
    if comm is not None:
        train_data = scatter(train, comm, shuffle)
        val_data = scatter(val, comm, shuffle=False)

    if model is None:
        if args.deterministic:
            np.random.seed(0)  # the same initial weights in every run (Chainer's initializers)
        model = get_model_class(args.arch)()
    kind = None
    if not args.initmodel and not args.resume:
        args.initmodel = default_initmodel(args.arch)
    if args.initmodel:
        kind = load_initmodel(model, args.arch, args.initmodel)
        if rank0:
            print('initialised %s from %s (%s)' % (args.arch, args.initmodel, kind))
    elif args.arch == 'posenet' and not args.resume and rank0:
        print('warning: training CocoPoseNet from random weights: neither %s nor %s found '
              '(download VGG_ILSVRC_19_layers.caffemodel into models/, or pass --initmodel)'
              % (params['vgg19_weights'], params['vgg19_caffemodel']), file=sys.stderr)
    from_vgg = kind == 'vgg19'
    if comm is not None:
        import chainermn
        if any(isinstance(link, chainer.links.BatchNormalization) for link in model.links()):
            # batch statistics over the whole global batch (all ranks), as one process with
            # N times the batch would compute them; same parameter names, so model_iter_N
            # loads into the plain network
            with warnings.catch_warnings():  # "MultiNodeBatchNormalization is experimental"
                warnings.simplefilter('ignore', FutureWarning)
                model = chainermn.links.create_mnbn_model(model, comm)
    bn_mode = None
    if batch_norm_links(model):
        # trained weights ('model') were fitted to their stored statistics; a --resume'd
        # run keeps the mode saved in its snapshot (BatchNormMode.serialize)
        frozen = args.bn_mode == 'frozen' if args.bn_mode else kind == 'model'
        bn_mode = BatchNormMode(model, frozen, explicit=bool(args.bn_mode), verbose=rank0)
    model.to_device(device)
    device.use()

    loss_chain = make_loss_chain(model, arch['norm'])
    optimizer = chainer.optimizers.Adam(alpha=args.alpha, beta1=0.9, beta2=0.999, eps=1e-8)
    if comm is not None:
        # averages the gradients of all ranks before each Adam step
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    optimizer.setup(loss_chain)
    if args.arch == 'posenet':
        # The original scaled these layers' gradients by 1/4, which Adam's per-parameter
        # normalisation cancels; scaling their step (Adam's eta) has the intended effect.
        from models.CocoPoseNet import VGG19_FRONT
        for n in VGG19_FRONT + ['conv4_3_CPM', 'conv4_4_CPM']:
            for p in getattr(model, n).params():
                p.update_rule.hyperparam.eta = params['vgg_grad_scale']

    if args.loaderjob:
        train_iter = chainer.iterators.MultiprocessIterator(
            train_data, args.batchsize, n_processes=args.loaderjob, shared_mem=None,
            shuffle=shuffle)
    else:
        train_iter = chainer.iterators.SerialIterator(train_data, args.batchsize,
                                                      shuffle=shuffle)
    val_iter = chainer.iterators.SerialIterator(val_data, args.valbatchsize, repeat=False,
                                                shuffle=False)

    updater = training.updaters.StandardUpdater(train_iter, optimizer, device=device)
    if rank0:
        os.makedirs(args.out, exist_ok=True)
        remove_stale_temporaries(args.out)
    trainer = training.Trainer(updater, (args.iteration, 'iteration'), args.out)

    interval = args.snapshot_interval

    def at_interval(t):
        it = t.updater.iteration
        return it % interval == 0 or it == args.iteration

    val_trigger = (args.val_interval, 'iteration')
    log_trigger = (args.log_interval, 'iteration')

    def eval_func(*batch):
        with chainer.using_config('train', False):
            return loss_chain(*batch)

    if args.alpha_decay_at is None:
        args.alpha_decay_at = [round(f * args.iteration) for f in params['train_alpha_steps']]
    trainer.extend(AlphaSchedule(args.alpha, args.alpha_decay_at))
    if bn_mode is not None:
        trainer.extend(bn_mode)
    if args.arch == 'posenet':
        trainer.extend(FreezeSchedule([getattr(model, n) for n in VGG19_FRONT],
                                      params['vgg_freeze_iterations'], from_vgg))
    evaluator = extensions.Evaluator(val_iter, loss_chain, device=device, eval_func=eval_func)
    if comm is not None:
        # each rank evaluates its part of the validation images; results averaged over ranks
        evaluator = chainermn.create_multi_node_evaluator(evaluator, comm)
    trainer.extend(evaluator, trigger=val_trigger)
    trainer.extend(extensions.observe_value('skipped_images', lambda t: train.skipped_images),
                   trigger=log_trigger)
    if comm is not None:
        trainer.extend(AggregateObservations(comm, ('main/loss', 'main/paf', 'main/heat'),
                                             ('skipped_images',)))
    if rank0:
        add_writers(trainer, args, model, optimizer, log_trigger, at_interval)
    if args.resume:
        load_snapshot(trainer, args.resume, comm)
    if comm is not None:
        # Rank 0's weights to all ranks (random initialisations differ); mark the optimizer
        # as set up so that its first update is a real step (ChainerMN's multi-node optimizer
        # otherwise spends the first update on this broadcast and does not step).
        comm.bcast_data(loss_chain)
        optimizer.is_changed(loss_chain)
        if args.resume:
            check_same_weights(comm, model, 'after resuming at iteration %d'
                               % updater.iteration)
    return trainer, train


def add_writers(trainer, args, model, optimizer, log_trigger, at_interval):
    """Snapshots, log, console and plot: one writer (rank 0 of a multi-process job)."""
    import chainer
    from chainer.training import extensions
    # Uncompressed: zlib gains ~7 % on float weights but takes ~20 s for a CocoPoseNet trainer
    # snapshot (model + Adam's two moments, ~630 MB) on one core.
    save = functools.partial(chainer.serializers.save_npz, compression=False)
    trainer.extend(extensions.snapshot(filename='snapshot_iter_{.updater.iteration}',
                                       savefun=save, n_retains=args.keep_snapshots),
                   trigger=at_interval)
    trainer.extend(extensions.snapshot_object(model, 'model_iter_{.updater.iteration}',
                                              savefun=save), trigger=at_interval)
    trainer.extend(extensions.observe_value('alpha', lambda t: optimizer.alpha),
                   trigger=log_trigger)
    trainer.extend(extensions.LogReport(trigger=log_trigger))
    trainer.extend(extensions.PrintReport([
        'epoch', 'iteration', 'main/loss', 'validation/main/loss', 'main/paf',
        'validation/main/paf', 'main/heat', 'validation/main/heat', 'alpha', 'skipped_images',
        'elapsed_time']), trigger=log_trigger)
    trainer.extend(extensions.PlotReport(['main/loss', 'validation/main/loss'], 'iteration',
                                         trigger=log_trigger, file_name='loss.png'))
    if args.progress:
        trainer.extend(extensions.ProgressBar(update_interval=args.log_interval))


def load_snapshot(trainer, resume, comm=None):
    """Load the trainer snapshot ``resume`` (a file or an out directory's newest).

    In a multi-process job rank 0 picks and reads the file and broadcasts its bytes: every
    rank loads the very same snapshot, whether or not the other nodes see the out directory
    (and whatever rank 0 writes later).
    """
    import io
    import chainer
    if comm is None:
        path = source = latest_snapshot(resume)
    else:
        data = None
        if comm.rank == 0:
            path = latest_snapshot(resume)
            try:
                with open(path, 'rb') as f:
                    data = (path, f.read())
            except OSError as e:
                raise cli.UserError('--resume %s: cannot read (%s)' % (path, e.strerror or e))
        path, raw = comm.bcast_obj(data)
        source = io.BytesIO(raw)
    ignore = None
    try:
        with np.load(source) as z:
            key = 'updater/iterator:main/'
            order = z[key + 'order'] if key + 'order' in z.files else None
            position = int(z[key + 'current_position']) if (
                key + 'current_position' in z.files) else 0
        if hasattr(source, 'seek'):
            source.seek(0)
        n = len(trainer.updater.get_iterator('main').dataset)
        if (order is not None and order.ndim == 1 and len(order) != n) or position >= n:
            # saved by a run with another number of processes (each rank holds its part of
            # the data): weights, optimizer and schedule go on, the data pass starts afresh
            ignore = lambda name: name.startswith(key)  # noqa: E731
            if comm is None or comm.rank == 0:
                print('note: %s was saved with another number of processes: starting a new '
                      'pass over the training data' % path)
        chainer.serializers.load_npz(source, trainer, ignore_names=ignore)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise cli.UserError('--resume %s: not a snapshot of this training setup (%s)'
                            % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if comm is None or comm.rank == 0:
        print('resumed from %s at iteration %d' % (path, trainer.updater.iteration))


def run_trainer(trainer, out):
    """``trainer.run()``; a failed write (full disk, quota, lost mount) is one line naming
    the out directory.  The snapshot writer writes into a temporary directory and renames,
    so every snapshot already there is intact and ``--resume`` continues from it."""
    import gc
    try:
        trainer.run(show_loop_exception_msg=False)
        return
    except OSError as e:
        error = cli.UserError('iteration %d: cannot write in %s (%s)%s; snapshots already '
                              'there are intact: rerun with --resume %s'
                              % (trainer.updater.iteration, out,
                                 e.strerror or str(e) or type(e).__name__,
                                 ': %s' % e.filename if e.filename else '', out))
    # numpy's savez leaves its ZipFile open when a write fails; collected with the failed
    # frames, its __del__ would print "Exception ignored ... seek of closed file"
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise error


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a PAF pose network on COCO 2017.')
    p.add_argument('--arch', '-a', choices=sorted(params['pose_archs']), default='posenet')
    cli.add_device_arguments(p, backend=False, gpu_note='; with --communicator naive rank r '
                             'of a machine uses GPU id + r, with the GPU communicators GPU r')
    p.add_argument('--batchsize', '-B', type=int, default=params['train_batchsize'])
    p.add_argument('--valbatchsize', '-b', type=int, default=params['val_batchsize'])
    p.add_argument('--val-samples', type=int, default=params['val_samples'],
                   help='validation images (evenly spaced over val2017)')
    p.add_argument('--iteration', '-i', type=int, default=params['train_iterations'])
    p.add_argument('--initmodel', help='a full model npz to fine-tune, or for posenet a '
                   'VGG-19 npz or caffemodel (its front; default %s or %s when there) or CMU\'s '
                   'caffemodel / .pth' % (params['vgg19_weights'], params['vgg19_caffemodel']))
    p.add_argument('--resume', '-r', default='', help='trainer snapshot (snapshot_iter_N) or '
                   'an out directory (its newest intact snapshot)')
    p.add_argument('--bn-mode', choices=('frozen', 'batch'),
                   help="batch norms (mobilenet): 'frozen' normalises with the stored "
                   "statistics and keeps them (default with --initmodel: fine-tuning); 'batch' "
                   "normalises with each batch's statistics and updates the stored ones "
                   "(default from scratch); --resume: the mode of the run it continues")
    p.add_argument('--out', '-o', default='result', help='output directory')
    p.add_argument('--loaderjob', '-j', type=int, default=0,
                   help='data-loading processes (0: load in the training process)')
    p.add_argument('--insize', type=int, default=params['insize'], help='training crop size')
    p.add_argument('--coco-dir', default=params['coco_dir'])
    p.add_argument('--alpha', type=float, default=params['train_alpha'], help='Adam alpha')
    p.add_argument('--alpha-decay-at', type=int, nargs='*', metavar='ITER',
                   help='iterations after which alpha is divided by 10 (default: 1/3 and 2/3 '
                   'of --iteration; none given: constant alpha)')
    p.add_argument('--snapshot-interval', type=int, default=params['snapshot_interval'],
                   help='iterations between model_iter_N / snapshot_iter_N')
    p.add_argument('--val-interval', type=int, default=params['snapshot_interval'])
    p.add_argument('--log-interval', type=int, default=20)
    p.add_argument('--keep-snapshots', type=int, default=3,
                   help='trainer snapshots kept (model_iter_N are all kept; -1: keep all)')
    p.add_argument('--no-progress', dest='progress', action='store_false')
    p.add_argument('--communicator', choices=COMMUNICATORS,
                   help='data-parallel training over MPI ranks (run under mpiexec) with this '
                   'ChainerMN communicator: naive (CPU) or pure_nccl (GPUs; each rank uses the '
                   'GPU numbered by its rank on its machine); --batchsize is per rank')
    p.add_argument('--deterministic', action='store_true',
                   help='reproducible runs (tests, debugging): fixed initial weights, each '
                   'training image always gets the same augmentation and batches follow the '
                   'dataset order (no shuffling)')
    args = p.parse_args(argv)
    for name in ('batchsize', 'valbatchsize', 'iteration', 'snapshot_interval',
                 'val_interval', 'log_interval'):
        if getattr(args, name) <= 0:
            p.error('--%s must be positive' % name.replace('_', '-'))
    if args.val_samples <= 0:
        p.error('--val-samples must be positive')
    return args


def main(argv=None, model=None):
    args = parse_args(argv)
    if not args.communicator:
        if mpi_world_size() > 1:
            raise cli.UserError('started by mpiexec as %d processes without --communicator: '
                                'each would train alone into the same files; add '
                                '--communicator naive (CPU) or pure_nccl (GPUs)'
                                % mpi_world_size())
        trainer, train = build_trainer(args, model)
        cli.write_json_atomic(os.path.join(args.out, 'params.json'), vars(args), indent=2)
        run_trainer(trainer, args.out)
        if train.skipped_images:
            print('skipped %d undecodable images' % train.skipped_images)
        return 0

    comm = create_communicator(args.communicator)
    try:
        if args.communicator != 'naive':
            args.gpu = comm.intra_rank  # one GPU per rank of a machine
        elif args.gpu >= 0:
            args.gpu += comm.intra_rank
        trainer, train = build_trainer(args, model, comm)
        if comm.rank == 0:
            cli.write_json_atomic(os.path.join(args.out, 'params.json'),
                                  dict(vars(args), ranks=comm.size), indent=2)
        run_trainer(trainer, args.out)
        check_same_weights(comm, trainer.updater.get_optimizer('main').target.model,
                           'after iteration %d' % trainer.updater.iteration)
        skipped = comm.allreduce_obj(train.skipped_images)
        if skipped and comm.rank == 0:
            print('skipped %d undecodable images' % skipped)
    except (cli.UserError, KeyboardInterrupt) as e:
        if comm.size == 1:
            raise
        # the other ranks may wait in a collective operation: end the whole job
        print('error: %s' % e if isinstance(e, cli.UserError) else 'interrupted',
              file=sys.stderr, flush=True)
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(2 if isinstance(e, cli.UserError) else 130)
    return 0


if __name__ == '__main__':
    cli.run_main(main)
