"""The nuclei dataset: a real labelled image split into disjoint train and val regions."""
import json

import numpy as np
import pytest

from ailurus.data import nuclei

try:
    WHEEL = nuclei.find_wheel()
except FileNotFoundError as e:
    WHEEL, REASON = None, str(e)
pytestmark = pytest.mark.skipif(WHEEL is None, reason="stardist wheel absent: `make nuclei-data` downloads it")


def test_train_crops_and_val_tiles_come_from_disjoint_halves():
    image, labels = nuclei.load_image_and_labels(WHEEL)
    assert image.shape == labels.shape == (512, 512) and len(np.unique(labels)) - 1 == 125
    top, bottom = set(np.unique(labels[:256])) - {0}, set(np.unique(labels[256:])) - {0}
    seen_train = set().union(*(set(np.unique(l)) for _, l in nuclei.train_crops(image, labels, 40, 128, seed=3)))
    seen_val = set().union(*(set(np.unique(l)) for _, l in nuclei.val_tiles(image, labels, 128)))
    assert not (seen_train - {0}) & (bottom - top)  # no nucleus that lies wholly in the val half
    assert not (seen_val - {0}) & (top - bottom)
    assert seen_val - {0} == bottom  # the tiles cover the whole bottom half
    (whole_image, whole_labels), = nuclei.half(image, labels, bottom=True)
    assert whole_image.shape == (256, 512) and set(np.unique(whole_labels)) - {0} == bottom
    (train_image, train_labels), = nuclei.half(image, labels, bottom=False)
    assert np.array_equal(train_image, image[:256]) and set(np.unique(train_labels)) - {0} == top
    large_tiles = list(nuclei.val_tiles(image, labels, 256))  # the bottom half in two 256 px tiles
    assert len(large_tiles) == 2 and np.array_equal(np.hstack([t for t, _ in large_tiles]), image[256:])


def test_build_writes_valid_coco_and_is_deterministic(tmp_path):
    roots = [nuclei.build(str(tmp_path / name), num_train=6, size=128, seed=1) for name in ("a", "b")]
    for split, num_images, height, width in (("train", 6, 128, 128), ("val", 8, 128, 128), ("val_whole", 1, 256, 512),
                                             ("train_whole", 1, 256, 512), ("val_256", 2, 256, 256)):
        docs = [json.loads((tmp_path / n / "annotations" / f"{split}.json").read_text()) for n in ("a", "b")]
        assert docs[0] == docs[1]
        assert len(docs[0]["images"]) == num_images and docs[0]["annotations"]
        for ann in docs[0]["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] >= nuclei.MIN_AREA and 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert {(i["height"], i["width"]) for i in docs[0]["images"]} == {(height, width)}
    # the whole half holds every nucleus once, uncut: no more annotations than the tiles' fragments
    whole, tiles = (json.loads((tmp_path / "a" / "annotations" / f"{s}.json").read_text())["annotations"]
                    for s in ("val_whole", "val"))
    assert 0 < len(whole) <= len(tiles)
    assert roots[0].endswith("a")
