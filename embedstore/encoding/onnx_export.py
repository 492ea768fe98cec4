"""The one ONNX exporter and the one measure every graph is checked by, for the encode engine's graphs
(`onnx_backend`) and the exported pipelines (`export.onnx_graph`) alike.

Exported with torch's TorchScript exporter (`dynamo=False`: the dynamo exporter needs onnxscript, which nothing else
here does), dynamic batch and sequence axes, from a wrapper that calls the model with keywords (transformers 5's
positional order is not (input_ids, attention_mask)) and returns the hidden states asked for, so no truncated copy
of the model is ever made: the exporter keeps only the layers those outputs need.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

OPSET = 17


class HiddenStates(torch.nn.Module):
    """The model called with keywords, returning hidden states `layers` (absolute indices; the last layer without
    asking the model for every layer's)."""

    def __init__(self, model, layers: Sequence[int], inputs: Sequence[str]) -> None:
        super().__init__()
        self.model, self.layers, self.inputs = model, tuple(layers), tuple(inputs)
        self.need_all = any(layer != model.config.num_hidden_layers for layer in self.layers)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.inputs, tensors)), output_hidden_states=self.need_all)
        if not self.need_all:
            return (out.last_hidden_state,)
        return tuple(out.hidden_states[layer] for layer in self.layers)


def export_graph(module: torch.nn.Module, example: Sequence[torch.Tensor], inputs: Sequence[str],
                 outputs: Sequence[str], path: Path, token_outputs: Sequence[str] = ()) -> None:
    """`module` traced on `example` into an ONNX file at `path`: inputs and `token_outputs` have dynamic batch and
    sequence axes, the other outputs (one row per text) a dynamic batch axis."""
    axes = {name: {0: "batch", 1: "sequence"} for name in (*inputs, *token_outputs)}
    axes.update({name: {0: "batch"} for name in outputs if name not in token_outputs})
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings are not the user's
        torch.onnx.export(module.eval(), tuple(example), str(path), input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)


def largest_difference(got: np.ndarray, expected: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The largest absolute difference between a graph's output and PyTorch's, over real tokens only when `mask`
    (padding positions carry no meaning): the one measure both checks bound by their tolerance."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if mask is not None:
        real = np.asarray(mask).astype(bool)
        got, expected = got[real], expected[real]
    return float(np.max(np.abs(got - expected))) if got.size else 0.0
