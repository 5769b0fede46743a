"""Datasets (registry, download, checksums), the batched loader and augmentation."""
from .base import DATASETS, ArrayDataset, DatasetSpec, default_cache_dir, list_datasets, load_dataset, register_dataset
from . import builtin  # noqa: F401  (registers digits, synthetic)
from . import idx, cifar, folder  # noqa: F401  (register mnist, fashion-mnist, cifar10, cifar100, folder)
from . import shards  # noqa: F401  (registers shards: folders written by `cnnlab pack`)
from . import signals, spectra  # noqa: F401  (register signals, spectra: 1-D signals [N, C, L])

__all__ = ["DATASETS", "ArrayDataset", "DatasetSpec", "default_cache_dir", "list_datasets", "load_dataset",
           "register_dataset"]
