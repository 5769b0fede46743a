"""Model registry and the model families (one module per family)."""
from .registry import MODELS, count_parameters, create_model, list_models, model_size_mb, register_model
from .activations import ACTIVATIONS, make_activation
from . import basic, fastnet, alexnet, vgg, nin, inception, tinynet, maxdepth, resnet, mobilenet, ndsb  # noqa: F401
from . import autoencoder, code_classifiers, dbn  # noqa: F401  (the two-stage paper's networks)

__all__ = ["MODELS", "ACTIVATIONS", "count_parameters", "create_model", "list_models", "make_activation",
           "model_size_mb", "register_model"]
