"""cnnlab: train, compare and deploy deep image classifiers (PyTorch)."""
from .errors import CnnlabError
from .data import list_datasets, load_dataset
from .models import count_parameters, create_model, list_models
from .optim import create_optimizer, create_scheduler
from .config import TrainConfig
from .train import train  # the function; the module stays importable as cnnlab.train

__version__ = "0.1.0"

__all__ = ["CnnlabError", "TrainConfig", "train", "count_parameters", "create_model", "create_optimizer", "create_scheduler",
           "list_datasets", "list_models", "load_dataset", "__version__"]
