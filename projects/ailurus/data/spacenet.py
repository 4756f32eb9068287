"""SpaceNet buildings from the solaris wheel: a real satellite scene split into disjoint halves.

The `solaris==0.4.0` wheel (Apache-2.0) ships ``solaris/data/sample_geotiff.tif``, a 900 x 900
single-band SpaceNet scene, and ``coco_sample_2.json``, its 43 building footprints as pixel
polygons. The wheel is downloaded at set-up (`make spacenet-data`; solaris is never installed) and
the two files are read from it. The band is stretched to 8 bits (1st to 99th percentile of the
scene) and repeated to three channels. Training images are random crops of the left half, each
flipped and rotated at random; validation is the right half, as one 900 x 450 image (``val``,
which fills a 1024 x 512 canvas without square padding) and as its two 450 x 450 halves
(``val_tiles``, which fill a square canvas). A building that crosses the middle column is split:
each half keeps only its own pixels, so no pixel is in both splits.

    python -m ailurus.data.spacenet --root datasets/ailurus_spacenet      # build (cached)
"""
import io
import json
import os
import zipfile
from typing import Iterator, List, Tuple

import numpy as np

from . import coco_files
from .coco_files import build_command, build_label_splits, label_instances, random_crops, register_splits

SPACENET_CATEGORIES = ["building"]
MIN_AREA = 16  # px; smaller fragments (cut by a crop border) are dropped
Pair = Tuple[np.ndarray, np.ndarray]


def spacenet_root() -> str:
    return os.environ.get("AILURUS_SPACENET_DATA", os.path.join("datasets", "ailurus_spacenet"))


def find_wheel() -> str:
    return coco_files.find_wheel("solaris-0.4.0", "AILURUS_SOLARIS_WHEEL", "spacenet-data")


def load_image_and_labels(wheel: str) -> Pair:
    """(900, 900, 3) uint8 scene and (900, 900) int32 label map (0 = background, i = building i)."""
    import cv2
    import tifffile

    with zipfile.ZipFile(wheel) as z:
        band = tifffile.imread(io.BytesIO(z.read("solaris/data/sample_geotiff.tif"))).astype(np.float64)
        footprints = json.loads(z.read("solaris/data/coco_sample_2.json"))["annotations"]
    low, high = np.percentile(band, [1, 99])
    grey = np.clip((band - low) / (high - low) * 255, 0, 255).round().astype(np.uint8)
    labels = np.zeros(band.shape, np.int32)
    for i, footprint in enumerate(footprints):
        polygon = np.asarray(footprint["segmentation"], np.float64).reshape(-1, 2)
        cv2.fillPoly(labels, [np.round(polygon).astype(np.int32)], i + 1)
    return np.repeat(grey[..., None], 3, -1), labels


def instances(labels: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """(category 0, bool mask) of every label with at least ``MIN_AREA`` pixels."""
    return label_instances(labels, MIN_AREA)


def halves(image: np.ndarray, labels: np.ndarray) -> Tuple[Pair, Pair]:
    """(left, right) halves of the scene: the training and the validation region."""
    middle = image.shape[1] // 2
    return (image[:, :middle], labels[:, :middle]), (image[:, middle:], labels[:, middle:])


def val_tiles(image: np.ndarray, labels: np.ndarray) -> Iterator[Pair]:
    """The right half as its top and bottom squares."""
    _, (right_image, right_labels) = halves(image, labels)
    side = right_image.shape[1]
    for y in (0, side):
        yield right_image[y : y + side], right_labels[y : y + side]


def train_crops(image: np.ndarray, labels: np.ndarray, count: int, size: int, seed: int) -> Iterator[Pair]:
    """``count`` random ``size`` x ``size`` crops of the left half, each flipped and rotated at random."""
    (left_image, left_labels), _ = halves(image, labels)
    return random_crops(left_image, left_labels, count, size, seed)


def build(root: str, num_train: int = 64, size: int = 450, seed: int = 0, force: bool = False) -> str:
    """Write ``root/{train,val,val_tiles}/*.png`` and their ``root/annotations/*.json`` (COCO format);
    skipped when the existing copy was built by this code with the same arguments."""
    def splits():
        image, labels = load_image_and_labels(find_wheel())
        return {"train": train_crops(image, labels, num_train, size, seed), "val": [halves(image, labels)[1]],
                "val_tiles": val_tiles(image, labels)}

    return build_label_splits(root, __file__, [num_train, size, seed], splits, MIN_AREA, SPACENET_CATEGORIES, force)


def register_spacenet_datasets(root: str = None) -> None:
    """Register ``ailurus_spacenet_{train,val,val_tiles}`` (COCO format) with Detectron2."""
    register_splits("ailurus_spacenet", root or spacenet_root(), ("train", "val", "val_tiles"))


if __name__ == "__main__":
    build_command(__doc__, spacenet_root(), 450, build)
