"""Models of the secfed runtime: Conv-4, MLP, the factory, and a flat parameter view."""

from secfed.models.build import ARCHS, build_model
from secfed.models.conv4 import Conv4
from secfed.models.mlp import MLP
from secfed.models.norm import NORMS
from secfed.models.params import (
    buffer_names,
    flatten_named,
    flatten_params,
    floating_buffers,
    num_params,
    param_names,
    param_shapes,
    unflatten_into,
    unflatten_named,
)

__all__ = [
    "ARCHS",
    "NORMS",
    "Conv4",
    "MLP",
    "build_model",
    "buffer_names",
    "flatten_named",
    "flatten_params",
    "floating_buffers",
    "num_params",
    "param_names",
    "param_shapes",
    "unflatten_into",
    "unflatten_named",
]
