"""cnnlab: train, compare and deploy deep image classifiers (PyTorch)."""
from .errors import CnnlabError
from .data import list_datasets, load_dataset
from .models import count_parameters, create_model, list_models
from .optim import create_optimizer, create_scheduler

__version__ = "0.1.0"

__all__ = ["CnnlabError", "count_parameters", "create_model", "create_optimizer", "create_scheduler",
           "list_datasets", "list_models", "load_dataset", "__version__"]


def __getattr__(name):  # lazy: importing cnnlab should not import the trainer and matplotlib
    if name in ("train", "TrainConfig"):
        from . import train as _train, config as _config
        return {"train": _train.train, "TrainConfig": _config.TrainConfig}[name]
    raise AttributeError(name)
