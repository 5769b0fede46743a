"""Model registry and the model families (one module per family)."""
from .registry import MODELS, count_parameters, create_model, list_models, model_size_mb, register_model
from .activations import ACTIVATIONS, make_activation
from . import basic, fastnet, alexnet, vgg, nin, inception, tinynet, maxdepth, resnet, mobilenet, ndsb  # noqa: F401
from . import autoencoder, code_classifiers, dbn  # noqa: F401  (the two-stage paper's networks)
from . import signal  # noqa: F401  (1-D signals: cae1d, cnn1d)
from . import googlenet, spp, dsn, constrained  # noqa: F401  (thesis Sec. 4.2-4.3 zoo: GoogLeNet 2014, SPP, DSN, constrained time)

__all__ = ["MODELS", "ACTIVATIONS", "count_parameters", "create_model", "list_models", "make_activation",
           "model_size_mb", "register_model"]
