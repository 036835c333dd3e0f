import numpy as np
import pytest

from pipeline.a2d import classes as C


def test_counts_and_palette():
    assert len(C.VALID_PAIRS) == 43
    assert len(C.JOINT_IDS) == 44 and C.JOINT_IDS[0] == 0
    assert len(C.PALETTE) == 64
    assert C.PALETTE[0] == (0, 0, 0)
    assert C.PALETTE[11] == (52, 1, 1)
    assert C.PALETTE[14] == (205, 1, 1)  # invalid pair still has a colour
    assert C.PALETTE[79] == (255, 205, 235)
    # the 20 invalid pairs of the release
    invalid = [i for i in C.PALETTE if i and i not in C.VALID_PAIRS]
    assert invalid == [14, 23, 24, 25, 27, 31, 32, 33, 37, 38, 42, 47, 51, 52, 53, 58, 62, 64,
                       71, 74]


def test_names():
    assert C.pair_name(0) == "background"
    assert C.pair_name(11) == "adult-climbing"
    assert C.pair_name(79) == "dog-none"
    assert C.pair_name(54) == "car-flying"


@pytest.mark.parametrize("shape", [(3, 5), (7, 1)])
def test_palette_round_trip(shape):
    rng = np.random.default_rng(0)
    ids = np.array(sorted(C.PALETTE))
    label = rng.choice(ids, size=shape).astype(np.uint8)
    rgb = C.label_to_rgb(label)
    assert rgb.dtype == np.uint8 and rgb.shape == (*shape, 3)
    np.testing.assert_array_equal(C.rgb_to_label(rgb), label)


def test_rgb_outside_palette_rejected():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"outside the A2D palette.*\(1, 2, 3\)"):
        C.rgb_to_label(rgb)


def test_label_without_colour_rejected():
    with pytest.raises(ValueError, match="without a palette colour"):
        C.label_to_rgb(np.array([[10, 0]]))


def test_encode_decode():
    label = np.array([[0, 11, 79], [54, 26, 0]])
    actor, action = C.decode(label)
    np.testing.assert_array_equal(actor, [[0, 1, 7], [5, 2, 0]])
    np.testing.assert_array_equal(action, [[0, 1, 9], [4, 6, 0]])
    np.testing.assert_array_equal(C.encode(actor, action), label)


def test_validity_and_joint_index():
    label = np.array([0, 11, 14, 79, 80, 10])
    np.testing.assert_array_equal(C.is_valid_label(label), [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(C.is_palette_id(label), [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(C.joint_to_index(np.array([0, 11, 14, 79])), [0, 1, -1, 43])
