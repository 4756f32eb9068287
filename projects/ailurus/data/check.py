"""Stop early, with one clear message, when a config's datasets are not on disk."""
import os
from typing import Iterable, List

from detectron2.data import DatasetCatalog, MetadataCatalog

COCO_LAYOUT = """expected layout:
  $DETECTRON2_DATASETS/coco/
    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/*.jpg
    val2017/*.jpg"""


# How to build each of the project's datasets (registered under these name prefixes).
BUILD_COMMANDS = {
    "ailurus_demo_1024": "`make demo-data` (or python -m ailurus.data.demo --set ailurus_demo_1024)",
    "ailurus_demo": "`make demo-data` (or python -m ailurus.data.demo)",
    "ailurus_nuclei": "`make nuclei-data` (or python -m ailurus.data.nuclei)",
    "ailurus_spacenet": "`make spacenet-data` (or python -m ailurus.data.spacenet)",
}


class DatasetMissing(RuntimeError):
    pass


def loader_dataset_names(loader_cfg) -> List[str]:
    """Dataset names a lazy-config data loader reads."""
    dataset_cfg = loader_cfg.get("dataset")
    names = dataset_cfg.get("names") if dataset_cfg is not None else None
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def check_datasets(names: Iterable[str]) -> None:
    """Raise ``DatasetMissing`` naming the paths looked in if a registered dataset's files are absent."""
    for name in names:
        if name not in DatasetCatalog.list():
            known = ", ".join(sorted(n for n in DatasetCatalog.list() if "coco_2017" in n or "ailurus" in n))
            raise DatasetMissing(f"dataset '{name}' is not registered. Registered COCO/demo datasets: {known}")
        meta = MetadataCatalog.get(name)
        paths = [p for p in (meta.get("json_file"), meta.get("image_root")) if p]
        missing = [p for p in paths if not os.path.exists(p)]
        if not missing:
            continue
        if name.startswith("coco_"):
            where = os.environ.get("DETECTRON2_DATASETS")
            root = f"DETECTRON2_DATASETS={where}" if where else "DETECTRON2_DATASETS is not set, so Detectron2 looked in ./datasets"
            raise DatasetMissing(
                f"COCO dataset '{name}' not found: missing {', '.join(missing)}.\n"
                f"{root}. Set DETECTRON2_DATASETS to the folder that contains coco/.\n{COCO_LAYOUT}"
            )
        build = next((command for prefix, command in BUILD_COMMANDS.items() if name.startswith(prefix)), None)
        raise DatasetMissing(
            f"dataset '{name}' not found: missing {', '.join(missing)}. "
            + (f"Build it with {build}." if build else "Register it with its files in place.")
        )


def config_dataset_names(cfg, train: bool) -> List[str]:
    """Dataset names the config's test loader (and train loader, if ``train``) reads."""
    names = loader_dataset_names(cfg.dataloader.test)
    if train:
        names = loader_dataset_names(cfg.dataloader.train) + names
    return names
