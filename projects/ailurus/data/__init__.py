"""Datasets: the embedded copy-paste demo set, the nuclei image, checks that a config's datasets exist,
and a dataset mapper that names unreadable images."""
from .demo import DEMO_CATEGORIES, demo_root, register_demo_datasets
from .check import DatasetMissing, check_datasets
from .mapper import CheckedDatasetMapper, UnreadableImage, use_checked_mapper
from .nuclei import NUCLEI_CATEGORIES, nuclei_root, register_nuclei_datasets

__all__ = ["CheckedDatasetMapper", "DEMO_CATEGORIES", "DatasetMissing", "UnreadableImage", "use_checked_mapper",
           "NUCLEI_CATEGORIES", "nuclei_root", "register_nuclei_datasets", "check_datasets", "demo_root", "register_demo_datasets"]
