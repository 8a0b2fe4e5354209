"""vltk.labeltok.maps against hand-made maps: UViM's canonical instance order (make_canonical, y-major centre of
mass), COCO ids -> label maps -> COCO ids, and depth bins against hand-computed values of bin_nyu_depth / unbin_depth."""

import numpy as np
import pytest

from vltk.labeltok.maps import (
    Categories, bin_depth, canonical_instances, colour_depth, colour_panoptic, panoptic_map, to_coco, unbin_depth,
)

CATS = Categories.from_coco([{"id": 30, "isthing": 0}, {"id": 10, "isthing": 1}, {"id": 20, "isthing": 1}])


def test_categories_are_classes_by_id_with_void_first():
    assert CATS.ids == (10, 20, 30) and CATS.num_classes == 4
    assert CATS.things == [1, 2] and CATS.stuff == [3] and CATS.semantic(30) == 3


def test_canonical_order_is_by_centre_of_mass_y_major():
    ids = np.array([[5, 5, 3, 3],
                    [0, 0, 3, 3],
                    [7, 0, 0, 0],
                    [7, 0, 0, 0]])
    # keys x + 4 y: id 5 -> 0.5 + 0, id 3 -> 2.5 + 4 * 0.5 = 4.5, id 7 -> 0 + 4 * 2.5 = 10; void stays 0
    expected = np.array([[1, 1, 2, 2],
                         [0, 0, 2, 2],
                         [3, 0, 0, 0],
                         [3, 0, 0, 0]])
    np.testing.assert_array_equal(canonical_instances(ids), expected)


def test_panoptic_map_numbers_every_segment_and_voids_crowds():
    ids = np.array([[9, 9, 4, 4],
                    [1, 1, 4, 4],
                    [1, 1, 2, 2],
                    [0, 0, 2, 6]])
    segments = [{"id": 9, "category_id": 10}, {"id": 4, "category_id": 10}, {"id": 1, "category_id": 30},
                {"id": 2, "category_id": 20}, {"id": 6, "category_id": 20, "iscrowd": 1}]
    labels = panoptic_map(ids, segments, CATS)
    np.testing.assert_array_equal(labels[..., 0], [[1, 1, 1, 1], [3, 3, 1, 1], [3, 3, 2, 2], [0, 0, 2, 0]])
    # keys x + 4 y: 9 -> 0.5, 4 -> 2.5 + 4 * 0.5 = 4.5, 1 -> 0.5 + 4 * 1.5 = 6.5, 2 -> 7/3 + 4 * 7/3 = 11.7
    np.testing.assert_array_equal(labels[..., 1], [[1, 1, 2, 2], [3, 3, 2, 2], [3, 3, 4, 4], [0, 0, 4, 0]])


def test_label_maps_to_coco_and_back_exactly():
    rng = np.random.default_rng(0)
    ids = rng.choice([0, 3, 8, 11, 12], size=(6, 7))
    segments = [{"id": 3, "category_id": 30}, {"id": 8, "category_id": 10}, {"id": 11, "category_id": 10},
                {"id": 12, "category_id": 20}]
    labels = panoptic_map(ids, segments, CATS)
    coco_ids, info = to_coco(labels, CATS)
    np.testing.assert_array_equal(coco_ids == 0, ids == 0)
    for segment in info:  # each new segment is exactly one old one, with its category
        old = np.unique(ids[coco_ids == segment["id"]])
        assert len(old) == 1 and {s["id"]: s["category_id"] for s in segments}[int(old[0])] == segment["category_id"]
    np.testing.assert_array_equal(panoptic_map(coco_ids, info, CATS), labels)


def test_to_coco_makes_one_segment_per_stuff_class():
    labels = np.array([[[3, 1], [3, 2]], [[1, 3], [0, 4]]])  # stuff class 3 under two instance ids
    ids, info = to_coco(labels, CATS)
    assert ids[0, 0] == ids[0, 1] != 0 and ids[1, 1] == 0 and len(info) == 2


def test_depth_bins_by_hand():
    # floor((d - 0.001) / 9.999 * 256), clipped to [0, 255]
    metres = np.array([0.0, 0.001, 0.04, 5.0, 9.99, 10.0, 20.0])
    np.testing.assert_array_equal(bin_depth(metres, min_depth=1e-3, max_depth=10.0, bins=256),
                                  [0, 0, 0, 127, 255, 255, 255])  # 0.04 -> 0.998; 5 -> 127.99; 9.99 -> 255.74
    # (b + 0.5) / 256 * 9.999 + 0.001
    np.testing.assert_allclose(unbin_depth(np.array([0, 127, 255]), min_depth=1e-3, max_depth=10.0, bins=256),
                               [0.0205293, 4.9809707, 9.9804707], rtol=1e-6)


@pytest.mark.parametrize("labels", [np.zeros((3, 4, 2), np.int64), np.array([[[1, 1], [2, 2], [3, 4]]])])
def test_colourisations_are_rgb_pictures(labels):
    assert colour_panoptic(labels, CATS).shape == (*labels.shape[:2], 3)
    picture = colour_depth(np.array([[0.0, 1.0, 50.0]]), min_depth=1e-3, max_depth=10.0)
    assert picture.dtype == np.uint8 and picture.shape == (1, 3, 3)
