"""The encoding options as one validated value, the compute settings apart, and the CLI declaring them once."""
from __future__ import annotations

import dataclasses

import click
import pytest
import typer

from embedstore.base.errors import ConfigError
from embedstore.cli.app import app
from embedstore.encoding.models import resolve_model
from embedstore.encoding.options import ComputeOptions, EncodeOptions

ENCODING_FLAGS = {"--model", "--layer", "--pooling", "--max-length", "--prefix", "--dtype", "--quantize"}


@pytest.mark.parametrize("kwargs, message", [
    ({"model": ""}, r"model: ''; expected a model name"),
    ({"pooling": "avg"}, r"pooling: 'avg' is not supported; expected one of mean, cls, max"),
    ({"layers": ()}, r"layers: \(\); expected at least one whole layer index"),
    ({"layers": (1.5,)}, r"layers: \(1.5,\); expected at least one whole layer index"),
    ({"max_length": 1}, r"max_length: 1; expected a whole number of tokens, at least 2"),
    ({"max_length": True}, r"max_length: True; expected a whole number"),
    ({"prefix": 3}, r"prefix: 3; expected a string or None"),
    ({"dtype": "int8"}, r"dtype: 'int8' is not supported"),
    ({"fingerprint": ""}, r"fingerprint: ''; expected a model fingerprint"),
])
def test_encode_options_are_validated_when_built(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EncodeOptions(**kwargs)


def test_encode_options_are_frozen_and_carry_no_compute_settings():
    options = EncodeOptions(layers=[1, 2])
    assert options.layers == (1, 2) and hash(options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.pooling = "cls"  # type: ignore[misc]
    assert not {"batch_size", "device", "chunk_rows"} & {f.name for f in dataclasses.fields(EncodeOptions)}
    with pytest.raises(ConfigError, match=r"batch_size: 0; expected a positive integer"):
        ComputeOptions(batch_size=0)


def test_keys_come_from_the_options_and_a_pinned_fingerprint_must_match(tiny_model_dir):
    spec = resolve_model(tiny_model_dir)
    options = EncodeOptions(model=str(tiny_model_dir), layers=(-1, 2, 1), max_length=64, prefix="")
    assert [k.layer for k in options.keys(spec)] == [2, 1]  # -1 and 2 are one layer of a 2-layer model
    with pytest.raises(ConfigError, match=r"layers: \[-1, 2, 1\] name 2 layers; expected one"):
        options.key(spec)
    pinned = dataclasses.replace(options, layers=(-1,)).pinned(spec)
    assert (pinned.fingerprint, pinned.layers, pinned.prefix) == (spec.fingerprint, (2,), "")
    assert pinned.key(spec) == dataclasses.replace(options, layers=(-1,)).key(spec)
    other = dataclasses.replace(pinned, fingerprint="0123456789abcdef")
    with pytest.raises(ConfigError, match=f"fingerprint {spec.fingerprint}; expected 0123456789abcdef"):
        other.key(spec)


def test_from_dict_refuses_unknown_keys_and_names_where():
    assert EncodeOptions.from_dict({"pooling": "cls", "layers": [3]}, "x") == EncodeOptions(pooling="cls", layers=(3,))
    with pytest.raises(ConfigError, match=r"^f.json: encoding.layer: unknown key"):
        EncodeOptions.from_dict({"layer": 3}, "f.json: encoding")
    with pytest.raises(ConfigError, match=r"^f.json: encoding.pooling: 'avg'"):
        EncodeOptions.from_dict({"pooling": "avg"}, "f.json: encoding")
    with pytest.raises(ConfigError, match=r"^f.json: encoding: \[\]; expected a table"):
        EncodeOptions.from_dict([], "f.json: encoding")


def _flags(command) -> set[str]:
    return {decl for param in command.params for decl in getattr(param, "opts", []) if decl.startswith("--")}


def test_every_command_that_encodes_takes_the_same_encoding_options():
    root = typer.main.get_command(app)
    context = click.Context(root)  # the app builds a command only when asked for it
    commands = {name: root.get_command(context, name) for name in ("encode", "train-aligner", "train-head")}
    analyze = root.get_command(context, "analyze").commands
    commands.update({f"analyze {n}": analyze[n] for n in ("cosine", "retrieval", "gradients")})
    for name, command in commands.items():
        assert ENCODING_FLAGS <= _flags(command), name
    assert ENCODING_FLAGS - {"--layer"} <= _flags(analyze["layers"])  # its own --layers list, the rest shared
