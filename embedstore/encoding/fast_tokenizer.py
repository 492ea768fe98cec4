"""A model's tokenizer straight from its tokenizer.json, when that file holds the very pipeline its class builds.

Why: transformers 5's `XLMRobertaTokenizer` (e5-small's declared class) does not load the file's pipeline; it
parses the 17 MB tokenizer.json in Python, hands its 250,002-piece vocabulary to a new Unigram model and rebuilds
the normalizer, pre-tokenizer, post-processor and decoder itself. The generic class (`TokenizersBackend`) loads the
file as it is, in Rust: 2-3x less CPU (docs/performance.md, "The demo"). The two give the same ids only when the
file's pipeline is the one the class builds, which holds for a file written from that class (e5-small's) but not for
any file: a tokenizer.json written by another tool may differ in a pre-tokenizer flag, and then the same text would
get other ids, and other vectors, under the same store key.

So the switch is checked on every load: the class is built around a few pieces of the file's vocabulary (cheap:
what costs is the vocabulary, which both ways take from the same file) and every part of its pipeline but the
vocabulary is compared with the file's, with the model's type and settings and the special tokens. Anything that
differs, or a class that does more than build the pipeline (methods of its own, a parent between it and the
generic class), keeps the class.

What the check does not cover: a Unigram vocabulary's scores are read by two parsers, Python's json (the class)
and the Rust library's (the file), and the latter can land one unit in the last place away (a quarter of
e5-small's 250,002 scores, seen by saving both). Only two segmentations whose summed scores tie to ~1e-15 can
tell them apart; the ids were identical on the bundled sample's 6,005 texts and the edge cases of
docs/performance.md, and `tests/test_fast_tokenizer.py` checks them on the sample.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
PIPELINE_PARTS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
#: What a class that only builds the pipeline defines; any other name (a method of its own) keeps the class.
PLAIN_CLASS_NAMES = frozenset({"__module__", "__doc__", "__qualname__", "__firstlineno__", "__static_attributes__",
                               "__annotations__", "__init__", "vocab_files_names", "model_input_names", "model",
                               "padding_side", "truncation_side", "slow_tokenizer_class"})
#: The check builds the class on the vocabulary's first pieces, up to the highest special token id below this.
MAX_PREFIX_PIECES = 4096


def load_generic_if_same(path: Path) -> Any | None:
    """The tokenizer of the model at `path`, read straight from its tokenizer.json and given its declared class
    (an object the class would have built: same pipeline, same attributes, saved under the class's name), or
    None when the class must load it (no tokenizer.json, an unknown or non-plain class, another pipeline)."""
    from transformers import TokenizersBackend

    cls = declared_class(path)
    if cls is None:
        return None
    try:
        generic = TokenizersBackend.from_pretrained(path)
    except Exception:  # a file the generic class cannot read: its class may, or says why it cannot
        return None
    if cls is TokenizersBackend:
        return generic
    state = json.loads(generic.backend_tokenizer.model.__getstate__())  # parsed once: ~9 MB with the vocabulary
    built = _built_by_class(cls, path, generic, state)
    if built is None or not same_pipeline(generic, built, _without_vocabulary(state)):
        return None
    # the class defines nothing but its pipeline and these attributes (`declared_class`), so with them the object
    # is what the class builds; under its name, a tuned or exported copy saves the model's own tokenizer_config
    generic.__class__ = cls
    for attribute in ("model_input_names", "padding_side", "truncation_side"):
        setattr(generic, attribute, getattr(built, attribute))
    return generic


def declared_class(path: Path) -> type | None:
    """The tokenizer class the model's tokenizer_config.json names, when the switch can apply to it: a direct
    subclass of the generic class that defines nothing but its pipeline, with a tokenizer.json to load."""
    from transformers import TokenizersBackend
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    if not (path / TOKENIZER_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        return None
    name = _config(path).get("tokenizer_class")
    cls = tokenizer_class_from_name(name) if isinstance(name, str) else None
    if cls is None or not isinstance(cls, type):
        return None
    if cls is TokenizersBackend:
        return cls
    if cls.__bases__ != (TokenizersBackend,) or set(vars(cls)) - PLAIN_CLASS_NAMES:
        return None
    return cls


def _config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _without_vocabulary(state: dict[str, Any]) -> dict[str, Any]:
    """A backend model's serialised form without its vocabulary (and merges): type, unk id, byte fallback..."""
    return {k: v for k, v in state.items() if k not in ("vocab", "merges")}


def _built_by_class(cls: type, path: Path, generic: Any, state: dict[str, Any]) -> Any | None:
    """`cls` built as its from_pretrained would build it from this file, but on the vocabulary's first pieces
    only (None when the class cannot be built so, or its special tokens sit too far into the vocabulary)."""
    backend = generic.backend_tokenizer
    kind = state.get("type")
    if getattr(cls, "model", None) is None or cls.model.__name__ != kind:
        return None
    special_ids = [backend.token_to_id(str(getattr(generic, a))) for a in SPECIAL_ATTRIBUTES
                   if getattr(generic, a, None) is not None]
    if any(i is None for i in special_ids):
        return None
    # special tokens further in (XLM-R's <mask> is the last piece) are added by the class as new tokens: a pipeline
    # part that named them by id would then differ and keep the class
    size = max((i for i in special_ids if i < MAX_PREFIX_PIECES), default=0) + 1
    kwargs = {k: v for k, v in _config(path).items()
              if k not in ("tokenizer_class", "backend", "auto_map", "added_tokens_decoder", "name_or_path")}
    if kind == "Unigram":
        kwargs["vocab"] = [tuple(p) for p in state["vocab"][:size]]
    else:  # BPE, WordPiece, WordLevel take a token -> id map, which may skip ids
        kwargs["vocab"] = {backend.id_to_token(i): i for i in range(size) if backend.id_to_token(i) is not None}
        if kind == "BPE":
            kwargs["merges"] = []
    normalizer = backend.normalizer
    if normalizer is not None:
        charsmap = _precompiled_charsmap(json.loads(normalizer.__getstate__()))
        if charsmap is not None:
            kwargs["_spm_precompiled_charsmap"] = charsmap
    try:
        return cls(**kwargs)
    except Exception:  # a class whose constructor wants what a few pieces cannot give: keep the class
        return None


def _precompiled_charsmap(normalizer: dict[str, Any]) -> bytes | None:
    import base64

    parts = normalizer.get("normalizers", [normalizer]) if normalizer.get("type") == "Sequence" else [normalizer]
    for part in parts:
        if part.get("type") == "Precompiled" and "precompiled_charsmap" in part:
            return base64.b64decode(part["precompiled_charsmap"])
    return None


def _state(part: Any) -> Any:
    return None if part is None else json.loads(part.__getstate__())


def same_pipeline(generic: Any, built: Any, settings: dict[str, Any]) -> bool:
    """Whether `generic` (the file's pipeline, its model's `settings` without the vocabulary) and `built` (the
    class's, on a prefix of the same vocabulary) tokenize alike: every pipeline part, the model's settings, the
    special tokens."""
    a, b = generic.backend_tokenizer, built.backend_tokenizer
    if any(_state(getattr(a, part)) != _state(getattr(b, part)) for part in PIPELINE_PARTS):
        return False
    if settings != _without_vocabulary(json.loads(b.model.__getstate__())):
        return False
    if any(str(getattr(generic, attr, None)) != str(getattr(built, attr, None)) for attr in SPECIAL_ATTRIBUTES):
        return False
    flags = {(t.content, t.special, t.lstrip, t.rstrip, t.single_word, t.normalized)
             for t in generic.added_tokens_decoder.values()}
    built_flags = {(t.content, t.special, t.lstrip, t.rstrip, t.single_word, t.normalized)
                   for t in built.added_tokens_decoder.values()}
    return flags == built_flags
