"""The copy-paste sets: the 256 px demo set as the studies built it, and the 1024 px set."""
import hashlib
import json

import numpy as np

from ailurus.data import demo

COCO_SMALL, COCO_LARGE = 32 ** 2, 96 ** 2
PINNED_256 = "18f193ad51d2b9be"  # built by the code behind every demo row in reports/


def _annotations(root, split):
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_the_256_set_is_the_one_the_studies_used(tmp_path):
    """Pinned: the 1024 px set's options must not change a byte of the 256 px set's scenes."""
    demo.build(str(tmp_path), num_train=2, num_val=2, seed=0)
    digest = hashlib.sha256()
    for split in ("train", "val"):
        digest.update((tmp_path / "annotations" / f"{split}.json").read_bytes())
    assert digest.hexdigest()[:16] == PINNED_256
    assert not (tmp_path / "val_tiles").exists()


def test_train_and_val_backgrounds_are_disjoint():
    for demo_set in demo.DEMO_SETS.values():
        train, val = demo_set.splits["train"].backgrounds, demo_set.splits["val"].backgrounds
        assert train and val and not set(train) & set(val)


def test_1024_scenes_fill_the_canvas_with_objects_from_small_to_large(tmp_path):
    for name in ("a", "b"):
        demo.build(str(tmp_path / name), num_train=3, num_val=2, seed=0, demo_set=demo.DEMO_1024)
    for split in ("train", "val", "val_tiles"):
        assert _annotations(tmp_path / "a", split) == _annotations(tmp_path / "b", split)
    assert (tmp_path / "a" / "val" / "00001.jpg").read_bytes() == (tmp_path / "b" / "val" / "00001.jpg").read_bytes()
    scenes = _annotations(tmp_path / "a", "train")["images"] + _annotations(tmp_path / "a", "val")["images"]
    assert len(scenes) == 5
    for image in scenes:  # at most 25% of a square 1024 canvas is padding
        assert max(image["height"], image["width"]) == 1024 and min(image["height"], image["width"]) >= 768
    areas = [a["area"] for s in ("train", "val") for a in _annotations(tmp_path / "a", s)["annotations"]]
    assert len(areas) >= 5 * 3  # 4-16 pasted per scene, a few hidden by later ones
    assert min(areas) < COCO_SMALL and max(areas) > COCO_LARGE
    tiles = _annotations(tmp_path / "a", "val_tiles")["images"]
    assert len(tiles) >= 2 * 4 and max(max(t["height"], t["width"]) for t in tiles) == 512


def test_tiles_partition_the_scene_and_cut_its_instances():
    rows, cols = np.mgrid[:768, :1024]
    image = np.stack([rows % 256, cols % 256, (rows // 256) * 4 + cols // 256], -1).astype(np.uint8)
    whole = np.zeros((768, 1024), bool)
    whole[100:700, 400:600] = True  # crosses the tile border at row 512 and column 512
    inside = np.zeros((768, 1024), bool)
    inside[10:50, 10:50] = True
    sliver = np.zeros((768, 1024), bool)
    sliver[505:515, 0:5] = True  # 50 px: 35 above the border, 15 below; both too small to keep
    tiles = list(demo.tiles(image, [(0, whole), (1, inside), (2, sliver)], 512))
    assert [t.shape[:2] for t, _ in tiles] == [(512, 512), (512, 512), (256, 512), (256, 512)]
    top = np.concatenate([tiles[0][0], tiles[1][0]], 1)
    bottom = np.concatenate([tiles[2][0], tiles[3][0]], 1)
    assert np.array_equal(np.concatenate([top, bottom]), image)
    kept = [[(c, int(m.sum())) for c, m in instances] for _, instances in tiles]
    assert kept == [[(0, 412 * 112), (1, 1600)], [(0, 412 * 88)], [(0, 188 * 112)], [(0, 188 * 88)]]
