"""Plot a training log (train_coco_pose_estimation.py's out/log) as a PNG.

    python plot_train_log.py result/log [--out loss.png] [--keys main/loss validation/main/loss]

One panel per group: total loss, PAF loss, heatmap loss; training and validation curves
against the iteration, log-scaled y (linear when a value is not positive).  Entries whose
iteration or value is not a finite number (null, NaN) are left out.  Written atomically, as
the picture type of ``--out``'s extension (png, pdf, svg, ...).
"""
import compat  # noqa: F401  (first: Chainer 7.8.1 on NumPy 2, see compat.py)
import argparse
import json
import math
import os

import cli

GROUPS = [('loss', ['main/loss', 'validation/main/loss']),
          ('PAF loss', ['main/paf', 'validation/main/paf']),
          ('heatmap loss', ['main/heat', 'validation/main/heat'])]


def read_log(path):
    try:
        with open(path) as f:
            log = json.load(f)
    except FileNotFoundError:
        raise cli.UserError('%s: no such log file' % path)
    except (ValueError, UnicodeDecodeError) as e:
        raise cli.UserError('%s: not a JSON training log (%s)' % (path, str(e).splitlines()[0]))
    if not isinstance(log, list) or not all(isinstance(e, dict) and 'iteration' in e
                                            for e in log):
        raise cli.UserError('%s: not a Chainer LogReport log (a list of entries with '
                            '"iteration")' % path)
    if not log:
        raise cli.UserError('%s: the log has no entries yet' % path)
    if not any(_number(e['iteration']) for e in log):
        raise cli.UserError('%s: no entry has an iteration number' % path)
    return log


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def points(log, key):
    """(iteration, value) of the entries where both are finite numbers."""
    return [(e['iteration'], e[key]) for e in log
            if _number(e['iteration']) and _number(e.get(key))]


def picture_format(out):
    """The picture type of ``out``'s extension, or a one-line error naming the ones
    matplotlib writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    known = sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())
    ext = os.path.splitext(out)[1][1:].lower()
    if ext not in known:
        raise cli.UserError('--out %s: unknown picture type %r (use one of %s)'
                            % (out, ext, ', '.join(known)))
    return ext


def plot(log, out, groups=GROUPS):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fmt = picture_format(out)
    wanted = [k for _, keys in groups for k in keys]
    groups = [(title, [k for k in keys if points(log, k)]) for title, keys in groups]
    groups = [g for g in groups if g[1]]
    if not groups:
        raise cli.UserError('the log has no numbers for any of the keys %s' % ', '.join(wanted))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], groups):
        positive = True
        for key in keys:
            pts = points(log, key)
            positive = positive and all(v > 0 for _, v in pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='.' if len(pts) < 50 else
                    None, label=key)
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.set_yscale('log' if positive else 'linear')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with cli.atomic_output(out) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('log', help="the out directory's 'log' file (or the directory)")
    p.add_argument('--out', '-o', default='train_log.png')
    p.add_argument('--keys', nargs='+', help='plot only these keys (one panel)')
    args = p.parse_args(argv)
    path = os.path.join(args.log, 'log') if os.path.isdir(args.log) else args.log
    picture_format(args.out)
    cli.check_outputs([('--out', args.out)], [('LOG', path)])
    log = read_log(path)
    plot(log, args.out, [('loss', args.keys)] if args.keys else GROUPS)
    print('wrote %s (%d log entries, last iteration %d)'
          % (args.out, len(log), max(e['iteration'] for e in log if _number(e['iteration']))))
    return 0


if __name__ == '__main__':
    cli.run_main(main)
