"""Small fitted networks (aligners' `to_torch()`, heads' modules) as a flat list of dense steps.

sentence-transformers 6 imports module classes outside its own namespace only with `trust_remote_code=True`,
also for local directories; its built-in `Dense` (a linear map, then a `torch.nn` activation, both loaded
without trust) is what an exported directory may use. Every aligner of the registry is such a chain once its
parts are read as affine maps: a linear map (linear, Procrustes), a shift (mean shift: the identity matrix), a
TorchAligner's standardization (a diagonal map either side of its MLP). A module this cannot read is an
error naming it, never an approximation; the ONNX export takes any module as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from embedstore.base.errors import ConfigError

#: Activations sentence-transformers' Dense loads by their torch class path (no custom code).
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid)
#: The activations `DenseStep.apply` computes (an exported head's numpy loader accepts these only).
NUMPY_ACTIVATIONS = ("Identity", "ReLU", "Tanh", "Sigmoid")


@dataclass
class DenseStep:
    """x @ weight.T + bias, then `activation` (a torch.nn class name, "Identity" for none)."""

    weight: np.ndarray  # (out, in) float32, as nn.Linear stores it
    bias: np.ndarray    # (out,)
    activation: str = "Identity"

    def apply(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T + self.bias
        if self.activation == "Identity":
            return y
        if self.activation == "ReLU":
            return np.maximum(y, 0)
        if self.activation == "Tanh":
            return np.tanh(y)
        if self.activation == "Sigmoid":
            return 1 / (1 + np.exp(-y))
        raise ConfigError(f"activation {self.activation} has no numpy form here; use the ONNX export")


def _diagonal(scale: float, shift: np.ndarray) -> DenseStep:
    dim = len(shift)
    return DenseStep(np.eye(dim, dtype=np.float32) * np.float32(scale), shift.astype(np.float32))


def dense_steps(module: nn.Module, what: str) -> list[DenseStep]:
    """The module as dense steps (eval mode: dropout is the identity); `what` names it in errors."""
    from embedstore.estimators.aligners.meanshift import Shift
    from embedstore.estimators.aligners.torch_aligner import Standardized
    from embedstore.estimators.heads.base import Standardize

    steps: list[DenseStep] = []

    def visit(m: nn.Module) -> None:
        if isinstance(m, nn.Sequential):
            for child in m:
                visit(child)
        elif isinstance(m, nn.Linear):
            bias = m.bias.detach().numpy() if m.bias is not None else np.zeros(m.out_features, np.float32)
            steps.append(DenseStep(m.weight.detach().float().numpy().copy(), bias.astype(np.float32).copy()))
        elif isinstance(m, nn.Dropout | nn.Identity):
            pass
        elif isinstance(m, ACTIVATIONS):
            if not steps or steps[-1].activation != "Identity":
                raise ConfigError(f"{what}: an activation ({type(m).__name__}) not right after a linear layer "
                                  "cannot be a Dense layer; use --format onnx")
            steps[-1].activation = type(m).__name__
        elif isinstance(m, Shift):
            bias = m.bias.detach().numpy()
            steps.append(DenseStep(np.eye(len(bias), dtype=np.float32), bias.astype(np.float32).copy()))
        elif isinstance(m, Standardize):  # a head's (x - mean) / scale: one diagonal Dense step
            scale = m.scale.detach().float().numpy()
            steps.append(DenseStep(np.diag(1 / scale).astype(np.float32),
                                   (-m.mean.detach().float().numpy() / scale).astype(np.float32)))
        elif isinstance(m, Standardized):
            scale = float(m.scale.detach().numpy()[0])
            shift = m.shift.detach().numpy()
            steps.append(_diagonal(1 / scale, -shift / scale))
            visit(m.net)
            steps.append(_diagonal(scale, shift))
        else:
            raise ConfigError(f"{what}: {type(m).__name__} has no sentence-transformers Dense form; "
                              "use --format onnx")

    visit(module)
    return steps
