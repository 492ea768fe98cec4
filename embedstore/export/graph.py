"""What an export computes, in torch: the pipeline's encoder cut at its layer, its pooling, the aligner when the
pipeline applies it to target-language text, and the head. Built from the loaded pipeline's own parts (the
store key's layer, pooling, prefix and max length; `Aligner.aligns_target_at_test`; `encoding.encoder.pool`),
so an export cannot disagree with `Pipeline.predict` about any of them.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.data.hashing import normalize_text
from embedstore.encoding.batching import tokenize
from embedstore.encoding.encoder import Encoder, collate, pool
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.onnx_backend import PROBE_TEXTS as CHECK_TEXTS
from embedstore.encoding.onnx_backend import sample_texts
from embedstore.encoding.onnx_export import HiddenStates, largest_difference
from embedstore.encoding.packed_linear import forget as forget_packed

#: Texts every export is checked on (different scripts and lengths, so one batch pads), with the 48 real sentences
#: the engine's graphs are checked on: the exported artifact must give the torch pipeline's vectors and predictions.
PROBE_TEXTS = ("새 문서를 여는 방법", "How do I insert a page number into the footer of a document?", "表の列を並べ替える",
               "在电子表格中输入公式", "ok",
               "A longer text about formulas, cells, spreadsheets, page styles and paragraph formatting, written to "
               "make this batch's sequences differ in length so that padding is exercised by the check.")


@dataclass
class Parts:
    """The pipeline as modules."""

    model: Any                 # the whole model (shared with encode: never changed, never copied); None once
                               # the export has written it (`release_model`)
    tokenizer: Any
    spec: ModelSpec
    pooling: str
    prefix: str
    max_length: int
    layer: int                 # the hidden state the pipeline's vectors pool
    aligner: nn.Module | None  # applied to the pooled vector (only when the pipeline applies it at test)
    head: nn.Module            # vector → logits
    classes: list


def load_parts(pipe) -> tuple[Parts, "Reference"]:
    """The modules of a loaded `Pipeline`, and the torch pipeline's outputs on `PROBE_TEXTS`, computed as `encode`
    computes them, before anything is traced. One copy of the model: the one `load_once` shares with encode (the
    ONNX graph takes the key's layer as an output, `HiddenStates`; the sentence-transformers writer saves the
    first blocks through `truncated`), let go by the writers before their check loads what they wrote."""
    from transformers.utils import logging as hf_logging

    from embedstore.encoding.models import load_once, plain_encoder

    hf_logging.disable_progress_bar()  # its stderr bars would garble --json output

    spec = plain_encoder(pipe.spec, "export")
    key = pipe.key
    model, tokenizer = load_once(spec, torch.device("cpu"))
    aligner = pipe.aligner.to_torch().eval() if pipe.aligner_at_test else None
    classes = [c.item() if hasattr(c, "item") else c for c in pipe.head.classes_]
    parts = Parts(model, tokenizer, spec, key.pooling, key.prefix, key.max_length, key.layer, aligner,
                  _head_module(pipe.head), classes)
    reference = Reference.of(pipe, parts, [*PROBE_TEXTS, *sample_texts(0, CHECK_TEXTS // 2)])
    forget_packed(model)  # the reference ran encode's packed layers; tracing and saving use the model itself
    return parts, reference


def release_model(parts: Parts) -> None:
    """Let the model go once the export holds what it wrote: the check then loads the written artifact, and the
    process never holds two copies of the weights (the model is `load_once`'s shared one: its cache lets go too)."""
    from embedstore.encoding.models import unload

    parts.model = None
    unload()


def _head_module(head) -> nn.Module:
    module = getattr(head, "module_", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{type(head).__name__} keeps no torch module; it cannot be exported")
    return copy.deepcopy(module).float().cpu().eval()


@contextlib.contextmanager
def truncated(model: Any, layer: int) -> Iterator[Any]:
    """`model` whose last hidden state is hidden state `layer`, for as long as the block runs: its first `layer`
    transformer blocks (BERT-family encoders have no norm after the last block, so nothing else changes). The
    blocks are shared, not copied, and put back after."""
    total = model.config.num_hidden_layers
    if layer == total:
        yield model
        return
    blocks = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(blocks, nn.ModuleList) or layer < 1:
        raise ConfigError(f"layer {layer} of {total}: only the last layer, or a layer >= 1 of a BERT-family "
                          "encoder (XLM-R, BERT, e5), can be exported")
    model.encoder.layer, model.config.num_hidden_layers = nn.ModuleList(list(blocks)[:layer]), layer
    try:
        yield model
    finally:
        model.encoder.layer, model.config.num_hidden_layers = blocks, total


@dataclass
class Reference:
    texts: list[str]
    vectors: np.ndarray        # what the head sees
    probabilities: np.ndarray

    @classmethod
    def of(cls, pipe, parts: Parts, texts: Sequence[str]) -> "Reference":
        texts = [normalize_text(t) for t in texts]
        tok = tokenize(parts.tokenizer, texts, parts.prefix, parts.max_length)
        batch = collate(tok, np.arange(len(texts)), parts.tokenizer.pad_token_id, torch.device("cpu"))
        x = Encoder(parts.model, parts.tokenizer, torch.device("cpu")).forward(batch, [parts.layer],
                                                                               parts.pooling)[parts.layer]
        if pipe.aligner_at_test:
            x = pipe.aligner.transform(x)
        return cls(texts, x, pipe.head.predict_proba(x))


class ExportGraph(nn.Module):
    """(input_ids, attention_mask) → (vector in the head's space, class probabilities): the whole pipeline."""

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        self.hidden = HiddenStates(parts.model, [parts.layer], ("input_ids", "attention_mask"))
        self.pooling = parts.pooling
        self.aligner = parts.aligner if parts.aligner is not None else nn.Identity()
        self.head = parts.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden(input_ids, attention_mask)[0]
        vector = self.aligner(pool(hidden, attention_mask, self.pooling))
        return vector, torch.softmax(self.head(vector), dim=-1)


def check_close(what: str, got: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    """The largest difference (`onnx_export.largest_difference`), or a ConfigError when it exceeds `tolerance`
    (nothing is published then)."""
    diff = largest_difference(got, expected)
    if not diff <= tolerance:
        raise ConfigError(f"export check: {what} differ from the torch pipeline's by {diff:.2e} (tolerance "
                          f"{tolerance:.0e}); the export was not written")
    return diff
