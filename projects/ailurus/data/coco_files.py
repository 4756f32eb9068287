"""What the generated datasets share: COCO annotations from masks, a build stamp, registration."""
import argparse
import glob
import hashlib
import json
import os
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np


def find_wheel(package: str, env_var: str, make_target: str) -> str:
    """The newest ``.cache/wheels/{package}-*.whl`` (or the path in ``env_var``); a
    ``FileNotFoundError`` saying how to fetch it otherwise."""
    pattern = os.environ.get(env_var, os.path.join(".cache", "wheels", f"{package}-*.whl"))
    matches = sorted(glob.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"no {package} wheel at {pattern}: run `make {make_target}` (it downloads the wheel) "
                                f"or set {env_var}.")
    return matches[-1]


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


def label_instances(labels: np.ndarray, min_area: int) -> List[Tuple[int, np.ndarray]]:
    """(category 0, bool mask) of every label of a label map (0 = background) with at least
    ``min_area`` pixels (smaller fragments, cut by a crop border, are dropped)."""
    ids = np.unique(labels)
    masks = [labels == i for i in ids[ids > 0]]
    return [(0, m) for m in masks if m.sum() >= min_area]


def flip_rotate(image: np.ndarray, labels: np.ndarray, rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W[, C]) and its label map rotated by a random multiple of 90 degrees, then
    flipped left-right half of the time (the same way)."""
    k, flip = rng.randint(4), rng.rand() < 0.5
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def random_crops(image: np.ndarray, labels: np.ndarray, count: int, size: int,
                 seed: int) -> Iterable[Tuple[np.ndarray, np.ndarray]]:
    """``count`` random ``size`` x ``size`` crops of ``image`` (H, W[, C]) and its label map, each
    flipped and rotated at random (``flip_rotate``)."""
    rng = np.random.RandomState(seed)
    for _ in range(count):
        y = rng.randint(0, image.shape[0] - size + 1)
        x = rng.randint(0, image.shape[1] - size + 1)
        yield flip_rotate(image[y : y + size, x : x + size], labels[y : y + size, x : x + size], rng)


def write_split(root: str, split: str, images: Iterable[Tuple[np.ndarray, Sequence[Tuple[int, np.ndarray]]]],
                categories: Sequence[str], image_format: str = "png") -> None:
    """``root/{split}/NNNNN.png`` (or ``.jpg``, quality 92, for photos) and
    ``root/annotations/{split}.json`` (COCO) for (image, instances) pairs; a (H, W) image is
    written as three equal channels."""
    from PIL import Image

    os.makedirs(os.path.join(root, split), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    entries, annotations = [], []
    for i, (image, objects) in enumerate(images):
        file_name = f"{i:05d}.{image_format}"
        rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
        Image.fromarray(rgb).save(os.path.join(root, split, file_name), **({"quality": 92} if image_format == "jpg" else {}))
        entries.append(dict(id=i + 1, file_name=file_name, height=rgb.shape[0], width=rgb.shape[1]))
        annotations += coco_annotations(i + 1, objects, len(annotations) + 1)
    with open(os.path.join(root, "annotations", f"{split}.json"), "w") as f:
        json.dump(dict(images=entries, annotations=annotations,
                       categories=[dict(id=i + 1, name=name) for i, name in enumerate(categories)]), f)


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


def build_label_splits(root: str, source_file: str, params: Sequence, splits: Callable[[], Dict[str, Iterable]],
                       min_area: int, categories: Sequence[str], force: bool = False) -> str:
    """Write each split of (image, label map) pairs that ``splits()`` yields, as ``write_split``
    does, with instances of at least ``min_area`` pixels; skipped when the copy at ``root`` was
    built by ``source_file`` with the same ``params``."""
    stamp = fingerprint(source_file, list(params))
    if not force and is_built(root, stamp):
        print(f"dataset up to date at {root}")
        return root
    for split, pairs in splits().items():
        write_split(root, split, [(image, label_instances(labels, min_area)) for image, labels in pairs], categories)
    mark_built(root, stamp)
    print(f"dataset written to {root}")
    return root


def build_command(description: str, root: str, size: int, build: Callable[..., str], argv=None) -> str:
    """The command line of a cropped dataset's builder: ``--root --num-train --size --seed --force``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=root)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--size", type=int, default=size, help="training crop side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date copy exists")
    args = parser.parse_args(argv)
    return build(args.root, args.num_train, args.size, args.seed, args.force)
