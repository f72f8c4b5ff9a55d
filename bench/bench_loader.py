"""Is the COCO data loader fast enough to feed training?  Side by side, in one run:

1. loader throughput (samples/s) in the training process and with a MultiprocessIterator of
   1 and 2 loader processes, at --insize;
2. one training iteration (forward + backward + Adam) of --arch at batch --batchsize on a
   fixed batch (the loader not involved), and the same iteration fed by the 2-process loader.

Prints the ratio loader time per batch / training iteration time (below 1: the loader keeps
up).  On a CPU-only machine the loader and the network compete for the same cores; on a GPU
the iteration is much shorter, so compare the loader's samples/s with your GPU's iterations/s.

    python bench/bench_loader.py [--quick] [--arch mobilenet|posenet] [--coco-dir DIR]

Without --coco-dir a tiny COCO directory is laid out from tests/data/coco_mini (4 images;
each sample is still a full augmentation of a real photo).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import compat  # noqa: E402,F401  (before chainer: Chainer 7.8.1 on NumPy 2)
from entity import params  # noqa: E402


def mini_coco(tmp):
    """A COCO dir from tests/data/coco_mini, with ignore masks."""
    sys.path.insert(0, os.path.join(REPO, 'tests'))
    from support.coco_mini import make_coco_dir
    import gen_ignore_mask
    root = make_coco_dir(os.path.join(tmp, 'coco'))
    gen_ignore_mask.process_split(root, 'train', progress=False)
    gen_ignore_mask.process_split(root, 'val', progress=False)
    return root


def loader_rate(data, batchsize, n_batches, n_processes):
    """Samples/s delivered by an iterator (0 processes: SerialIterator in this process)."""
    import chainer
    if n_processes:
        it = chainer.iterators.MultiprocessIterator(data, batchsize, n_processes=n_processes)
    else:
        it = chainer.iterators.SerialIterator(data, batchsize)
    try:
        it.next()  # start-up (process pool, shared memory) not counted
        t = time.perf_counter()
        for _ in range(n_batches):
            it.next()
        return n_batches * batchsize / (time.perf_counter() - t)
    finally:
        if n_processes:
            it.finalize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='small sizes for a fast check (insize 128, 3 batches, 1 iteration)')
    p.add_argument('--arch', default='mobilenet', choices=sorted(params['pose_archs']))
    p.add_argument('--coco-dir')
    p.add_argument('--insize', type=int)
    p.add_argument('--batchsize', type=int, default=10)
    p.add_argument('--batches', type=int, help='loader batches to time')
    p.add_argument('--iterations', type=int, help='training iterations to time')
    args = p.parse_args(argv)
    insize = args.insize or (128 if args.quick else 368)
    n_batches = args.batches or (3 if args.quick else 10)
    n_iter = args.iterations or (1 if args.quick else 3)

    import chainer
    import train_coco_pose_estimation as tr
    from coco_data_loader import CocoDataLoader
    from models import get_model_class

    with tempfile.TemporaryDirectory() as tmp:
        coco_dir = args.coco_dir or mini_coco(tmp)
        arch = params['pose_archs'][args.arch]
        data = CocoDataLoader(coco_dir, 'train', insize, pad_value=arch['pad_value'])
        print('arch %s, insize %d, batch %d, %d CPU cores, data: %s (%d images)'
              % (args.arch, insize, args.batchsize, os.cpu_count(), coco_dir, len(data)))

        rates = {}
        for n_proc in (0, 1, 2):
            rates[n_proc] = loader_rate(data, args.batchsize, n_batches, n_proc)
            print('loader, %s: %.1f samples/s (%.3f s per batch of %d)'
                  % ('in the training process' if n_proc == 0 else '%d process%s'
                     % (n_proc, 'es' if n_proc > 1 else ''), rates[n_proc],
                     args.batchsize / rates[n_proc], args.batchsize))

        model = get_model_class(args.arch)()
        loss_chain = tr.make_loss_chain(model, arch['norm'])
        opt = chainer.optimizers.Adam(alpha=params['train_alpha'])
        opt.setup(loss_chain)
        batch = chainer.dataset.concat_examples([data[i % len(data)]
                                                 for i in range(args.batchsize)])
        opt.update(loss_chain, *batch)  # warm-up
        times = []
        for _ in range(n_iter):
            t = time.perf_counter()
            opt.update(loss_chain, *batch)
            times.append(time.perf_counter() - t)
        it_time = float(np.median(times))
        print('training iteration, fixed batch: %.3f s' % it_time)

        it = chainer.iterators.MultiprocessIterator(data, args.batchsize, n_processes=2)
        try:
            opt.update(loss_chain, *chainer.dataset.concat_examples(it.next()))
            t = time.perf_counter()
            for _ in range(n_iter):
                opt.update(loss_chain, *chainer.dataset.concat_examples(it.next()))
            fed_time = (time.perf_counter() - t) / n_iter
        finally:
            it.finalize()
        print('training iteration, fed by 2 loader processes: %.3f s' % fed_time)

        for n_proc in (1, 2):
            print('ratio loader time per batch (%d process%s) / training iteration: %.3f'
                  % (n_proc, 'es' if n_proc > 1 else '', args.batchsize / rates[n_proc] / it_time))
        print('slow-down of an iteration fed by the loader: %.2fx' % (fed_time / it_time))
    return 0


if __name__ == '__main__':
    sys.exit(main())
