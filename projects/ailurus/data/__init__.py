"""Datasets: the embedded copy-paste demo set, and checks that a config's datasets exist."""
from .demo import DEMO_CATEGORIES, demo_root, register_demo_datasets
from .check import DatasetMissing, check_datasets

__all__ = ["DEMO_CATEGORIES", "DatasetMissing", "check_datasets", "demo_root", "register_demo_datasets"]
