"""A real image with real instance labels, split into disjoint regions: stardist's nuclei image.

The `stardist==0.9.2` wheel ships ``stardist/data/images/img2d.tif`` and ``mask2d.tif``: a 512 x 512
fluorescence image of the 2018 Data Science Bowl (CC0) with 125 labelled nuclei. The wheel is
downloaded at set-up (`make nuclei-data`; stardist itself is never installed) and the two files
are read with ``tifffile``. Training images are random crops of the top half, each flipped and
rotated at random; validation images are the bottom half cut into tiles (``val``), or the bottom
half as one image (``val_whole``, to evaluate at a ViTDet-sized canvas). For fine-tuning at larger
canvases, ``train_whole`` is the top half as one image (cropped by the config's augmentations) and
``val_256`` the bottom half in two 256 px tiles. A nucleus that crosses the
middle row is split: each half keeps only its own pixels, so no pixel is in both splits.

    python -m ailurus.data.nuclei --root datasets/ailurus_nuclei      # build (cached)
"""
import io
import os
import zipfile
from typing import List, Tuple

import numpy as np

from . import coco_files
from .coco_files import build_command, build_label_splits, label_instances, random_crops, register_splits

NUCLEI_CATEGORIES = ["nucleus"]
MIN_AREA = 16  # px; smaller fragments (cut by a crop border) are dropped


def nuclei_root() -> str:
    return os.environ.get("AILURUS_NUCLEI_DATA", os.path.join("datasets", "ailurus_nuclei"))


def find_wheel() -> str:
    return coco_files.find_wheel("stardist-0.9.2", "AILURUS_STARDIST_WHEEL", "nuclei-data")


def load_image_and_labels(wheel: str) -> Tuple[np.ndarray, np.ndarray]:
    """(512, 512) uint8 image and (512, 512) integer label map (0 = background) from the wheel."""
    import tifffile

    with zipfile.ZipFile(wheel) as z:
        image = tifffile.imread(io.BytesIO(z.read("stardist/data/images/img2d.tif")))
        labels = tifffile.imread(io.BytesIO(z.read("stardist/data/images/mask2d.tif")))
    return np.clip(image, 0, 255).astype(np.uint8), labels.astype(np.int32)


def instances(labels: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """(category 0, bool mask) of every label with at least ``MIN_AREA`` pixels."""
    return label_instances(labels, MIN_AREA)


def train_crops(image: np.ndarray, labels: np.ndarray, count: int, size: int, seed: int):
    """``count`` random ``size`` x ``size`` crops of the top half, each flipped and rotated at random."""
    half = image.shape[0] // 2
    return random_crops(image[:half], labels[:half], count, size, seed)


def val_tiles(image: np.ndarray, labels: np.ndarray, size: int):
    """The bottom half cut into non-overlapping ``size`` x ``size`` tiles."""
    half = image.shape[0] // 2
    for y in range(half, image.shape[0] - size + 1, size):
        for x in range(0, image.shape[1] - size + 1, size):
            yield image[y : y + size, x : x + size], labels[y : y + size, x : x + size]


def half(image: np.ndarray, labels: np.ndarray, bottom: bool):
    """The top (train) or bottom (val) half as one (256, 512) image: no nucleus is cut by a tile border."""
    rows = slice(image.shape[0] // 2, None) if bottom else slice(None, image.shape[0] // 2)
    yield image[rows], labels[rows]


def build(root: str, num_train: int = 64, size: int = 128, seed: int = 0, force: bool = False) -> str:
    """Write ``root/{split}/*.png`` and ``root/annotations/{split}.json`` of every split
    (COCO format); skipped when the existing copy was built by this code with the same arguments."""
    def splits():
        image, labels = load_image_and_labels(find_wheel())
        return {"train": train_crops(image, labels, num_train, size, seed), "val": val_tiles(image, labels, size),
                "val_whole": half(image, labels, bottom=True),
                "train_whole": half(image, labels, bottom=False), "val_256": val_tiles(image, labels, 256)}

    return build_label_splits(root, __file__, [num_train, size, seed], splits, MIN_AREA, NUCLEI_CATEGORIES, force)


def register_nuclei_datasets(root: str = None) -> None:
    """Register ``ailurus_nuclei_{train,val,val_whole,train_whole,val_256}`` (COCO format) with Detectron2."""
    register_splits("ailurus_nuclei", root or nuclei_root(), ("train", "val", "val_whole", "train_whole", "val_256"))


if __name__ == "__main__":
    build_command(__doc__, nuclei_root(), 128, build)
