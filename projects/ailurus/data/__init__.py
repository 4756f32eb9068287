"""Datasets: the embedded copy-paste demo set, and checks that a config's datasets exist."""
from .demo import DEMO_CATEGORIES, demo_root, register_demo_datasets
from .check import DatasetMissing, check_datasets
from .mapper import CheckedDatasetMapper, UnreadableImage, use_checked_mapper

__all__ = ["CheckedDatasetMapper", "DEMO_CATEGORIES", "DatasetMissing", "UnreadableImage", "use_checked_mapper", "check_datasets", "demo_root", "register_demo_datasets"]
