"""Datasets: the embedded copy-paste demo set, the nuclei image, the SpaceNet scene, checks that a
config's datasets exist, and a dataset mapper that names unreadable images."""
from .demo import DEMO_1024, DEMO_CATEGORIES, demo_root, register_demo_datasets
from .check import DatasetMissing, check_datasets
from .mapper import CheckedDatasetMapper, UnreadableImage, use_checked_mapper
from .nuclei import NUCLEI_CATEGORIES, nuclei_root, register_nuclei_datasets
from .spacenet import SPACENET_CATEGORIES, register_spacenet_datasets, spacenet_root

__all__ = ["CheckedDatasetMapper", "DEMO_1024", "DEMO_CATEGORIES", "DatasetMissing", "NUCLEI_CATEGORIES", "SPACENET_CATEGORIES",
           "UnreadableImage", "check_datasets", "demo_root", "nuclei_root", "register_demo_datasets",
           "register_nuclei_datasets", "register_spacenet_datasets", "spacenet_root", "use_checked_mapper"]
