"""Detectron2's ``DatasetMapper`` with a clear error, or an opt-in skip, for unreadable images."""
import logging
from typing import Dict, Optional

from detectron2.data import DatasetMapper

logger = logging.getLogger(__name__)


class UnreadableImage(RuntimeError):
    """An image file of a dataset that is missing or cannot be decoded."""


class CheckedDatasetMapper(DatasetMapper):
    """``DatasetMapper`` (same arguments) that names the file when an image cannot be read
    (missing, truncated, corrupt, not an image), instead of failing in PIL inside a loader worker.

    With ``skip_unreadable=True`` a training mapper instead logs a warning with the file and a
    running count of skipped images (per loader worker) and returns None, so Detectron2's
    ``MapDataset`` draws another image. At test time an unreadable image is always an error:
    skipping it would silently score a different set of images.
    """

    def __init__(self, is_train: bool = True, *, skip_unreadable: bool = False, **kwargs):
        if not isinstance(skip_unreadable, bool):
            raise ValueError(f"CheckedDatasetMapper: skip_unreadable={skip_unreadable!r} must be True or False.")
        super().__init__(is_train, **kwargs)
        self.skip_unreadable = skip_unreadable
        self.num_skipped = 0

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # PIL: missing, truncated or undecodable file
            file_name = dataset_dict.get("file_name", "<no file_name>")
            reason = f"{type(e).__name__}: {e}"
            if self.skip_unreadable and self.is_train:
                self.num_skipped += 1
                logger.warning("skipped unreadable image %s (%s); %d skipped so far", file_name, reason, self.num_skipped)
                return None
            hint = (
                "set dataloader.train.mapper.skip_unreadable=True to skip such images in training"
                if self.is_train
                else "evaluation never skips images, since that would score a different image set"
            )
            raise UnreadableImage(
                f"cannot read image {file_name} ({reason}). Fix or remove the file and its annotations, or {hint}."
            ) from None


def use_checked_mapper(dataloader) -> None:
    """Make a lazy-config ``dataloader`` (with ``train`` and ``test`` loaders) use ``CheckedDatasetMapper``."""
    for split in ("train", "test"):
        mapper = dataloader[split].mapper
        mapper._target_ = CheckedDatasetMapper
        if split == "train":
            mapper.skip_unreadable = False
