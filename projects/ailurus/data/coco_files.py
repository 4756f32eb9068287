"""What the generated datasets share: COCO annotations from masks, a build stamp, registration."""
import hashlib
import json
import os
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np


def coco_annotations(image_id: int, instances: Sequence[Tuple[int, np.ndarray]], first_id: int) -> List[Dict]:
    """COCO annotations (RLE masks) of one image's (category index, bool mask) instances."""
    import pycocotools.mask as mask_util

    anns = []
    for offset, (category, mask) in enumerate(instances):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x, y, w, h = mask_util.toBbox(rle).tolist()
        anns.append(dict(id=first_id + offset, image_id=image_id, category_id=category + 1, segmentation=rle,
                         area=float(mask.sum()), bbox=[x, y, w, h], iscrowd=0))
    return anns


def fingerprint(source_file: str, params) -> str:
    """Hash of a dataset generator's source and its parameters: a built copy is reused only if both match."""
    with open(source_file, "rb") as f:
        source = f.read()
    return hashlib.sha256(source + json.dumps(params).encode()).hexdigest()[:16]


def is_built(root: str, stamp: str) -> bool:
    path = os.path.join(root, ".built")
    return os.path.isfile(path) and open(path).read().strip() == stamp


def mark_built(root: str, stamp: str) -> None:
    with open(os.path.join(root, ".built"), "w") as f:
        f.write(stamp + "\n")


def register_splits(prefix: str, root: str, splits: Iterable[str]) -> None:
    """Register ``{prefix}_{split}`` for ``root/annotations/{split}.json`` and ``root/{split}/``."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    for split in splits:
        name = f"{prefix}_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, os.path.join(root, "annotations", f"{split}.json"), os.path.join(root, split))
