"""Issue 30.5: option lists derived from the options' dataclasses; one key checker with did-you-mean hints."""
from __future__ import annotations

from dataclasses import fields

import pytest
from typer.testing import CliRunner

from embedstore.api import encoding_options
from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys, options_of
from embedstore.cli.app import app
from embedstore.encoding.options import EncodeOptions
from embedstore.study.cells import ADAPT_KEYS, E2E_KEYS, ENCODING_KEYS
from embedstore.text_training.options import TrainOptions


def test_every_training_option_has_help_and_a_flag_of_tune_finetune_and_adapt():
    options = options_of(TrainOptions)
    assert [o.name for o in options] == [f.name for f in fields(TrainOptions)]
    assert all(o.help for o in options)
    for command in ("tune", "finetune", "adapt"):
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert all(f"--{o.name.replace('_', '-')}" in text for o in options), command


def test_the_encoding_flags_are_the_encode_options_fields_with_their_help():
    """Every command that encodes declares one flag per `EncodeOptions` field (the fingerprint aside: a saved
    pipeline pins it), its help and shown default taken from the field; `layers` is the `--layer` flag."""
    import typer

    from embedstore.cli.common import _encoding_parameters

    options = [o for o in options_of(EncodeOptions) if o.name != "fingerprint"]
    assert all(o.help for o in options)
    declared = {p.name: p.default for p in _encoding_parameters("one")}
    assert list(declared) == [("layer" if o.name == "layers" else o.name) for o in options]
    for o in options:
        flag = declared["layer" if o.name == "layers" else o.name]
        assert isinstance(flag, typer.models.OptionInfo) and flag.default is None  # unset: the settings decide
        assert flag.help.startswith(o.help) and f"(default: {o.shown};" in flag.help
    assert "layer" not in {p.name for p in _encoding_parameters("none")}


def test_config_tables_are_the_dataclasses_fields_but_what_the_cell_owns():
    train = {f.name for f in fields(TrainOptions)}
    assert set(E2E_KEYS) == train - {"seed", "head", "size"} | {"freeze_lm", "train_aligner"}
    assert set(ADAPT_KEYS) == train - {"seed", "head"} | {"identity_weight"}
    assert set(ENCODING_KEYS) == {f.name for f in fields(EncodeOptions)} - {"model", "fingerprint", "layers"} | {"layer"}


def test_an_unknown_key_names_where_the_nearest_name_and_every_allowed_one():
    with pytest.raises(ConfigError, match=r"^e2e\.pateince: unknown key \(did you mean 'patience'\?\); allowed: "
                                          r"epochs, .*patience"):
        check_keys("e2e.", {"epochs": 1, "pateince": 3}, E2E_KEYS)
    check_keys("e2e.", {"epochs": 1}, E2E_KEYS)  # known keys pass
    with pytest.raises(ConfigError, match=r"encoding option poolling: unknown key \(did you mean 'pooling'\?\)"):
        encoding_options(poolling="cls")


def test_adapt_takes_every_recipe_field_with_the_recipes_default_and_help():
    from embedstore.text_training.adapt import AdaptRecipe

    text = CliRunner().invoke(app, ["adapt", "--help"], terminal_width=200).output
    recipe = options_of(AdaptRecipe, exclude=("method",))
    assert [o.flag for o in recipe] == ["--lora-r", "--lora-alpha", "--lora-dropout", "--lora-target", "--temperature",
                                        "--identity-weight"]
    assert all(o.flag in text and o.help for o in recipe)
    targets = next(o for o in recipe if o.name == "lora_targets")
    assert targets.default == ["query", "key"] and AdaptRecipe("lora", lora_targets=targets.default).lora_targets == (
        "query", "key")
