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


def drop_nan_guards(path: Path) -> int:
    """Remove from the graph at `path` every `Where(IsNaN(p), 0, p)` after a Softmax; returns how many.

    torch's SDPA export zeroes attention rows that come out NaN, which happens only when a query row has every key
    masked. The encode engine's rows never do: the mask hides padding keys only, and every text keeps at least its
    special tokens, so each row sees a real key and the guard passes every value through unchanged. It still costs
    two passes over every layer's (batch, heads, length, length) probabilities: 3.6 % of the int8 graph's kernel
    time and 1.3 % of the fp32 graph's in ONNX Runtime's profiler (docs/performance.md). The export's check
    against PyTorch runs on the graph without them."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    nodes = model.graph.node
    producer = {out: node for node in nodes for out in node.output}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constants.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in nodes
                      if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})
    renamed, dropped, fills = {}, set(), set()
    for node in nodes:
        if node.op_type != "Where":
            continue
        condition, fill, value = node.input
        guard = producer.get(condition)
        if guard is None or guard.op_type != "IsNaN" or guard.input[0] != value \
                or getattr(producer.get(value), "op_type", None) != "Softmax" \
                or fill not in constants or np.any(constants[fill] != 0):
            continue
        renamed[node.output[0]] = value
        dropped.update((id(node), id(guard)))
        fills.add(fill)
    kept = [node for node in nodes if id(node) not in dropped]
    for node in kept:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    used = {name for node in kept for name in node.input}
    unused = fills - used  # the zeros only the guards read: left in, ONNX Runtime warns of them at every load
    kept = [node for node in kept if not (node.op_type == "Constant" and node.output[0] in unused)]
    initializers = [t for t in model.graph.initializer if t.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    if any(out.name in renamed for out in model.graph.output):
        raise ValueError(f"{path}: a graph output is a guarded attention probability; nothing to drop there")
    del nodes[:]
    nodes.extend(kept)
    onnx.save(model, str(path))
    return len(renamed)


def largest_difference(got: np.ndarray, expected: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The largest absolute difference between a graph's output and PyTorch's, over real tokens only when `mask`
    (padding positions carry no meaning): the one measure both checks bound by their tolerance."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if mask is not None:
        real = np.asarray(mask).astype(bool)
        got, expected = got[real], expected[real]
    return float(np.max(np.abs(got - expected))) if got.size else 0.0
