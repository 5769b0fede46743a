"""Datasets (registry, download, checksums), the batched loader and augmentation."""
from .base import DATASETS, ArrayDataset, DatasetSpec, default_cache_dir, list_datasets, load_dataset, register_dataset
from . import builtin  # noqa: F401  (registers digits, synthetic)

try:  # file-based datasets; registered when their module is present
    from . import idx, cifar, folder  # noqa: F401
except ImportError:  # pragma: no cover - during development only
    pass

__all__ = ["DATASETS", "ArrayDataset", "DatasetSpec", "default_cache_dir", "list_datasets", "load_dataset",
           "register_dataset"]
