"""Project settings: embedstore.toml found upward from the working directory, EMBEDSTORE_* variables over it,
flags over both, and every run saying where each value came from."""
import json

import pytest
from typer.testing import CliRunner

from embedstore.api import options_with_settings
from embedstore.base.errors import ConfigError
from embedstore.encoding.settings import ENV, default_store, project_settings
from embedstore.cli.app import app


@pytest.fixture
def clean_env(monkeypatch):
    for variable in ENV.values():
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_the_nearest_file_sets_values_relative_to_itself(tmp_path, clean_env):
    (tmp_path / "embedstore.toml").write_text('store = "vectors/s.zarr"\nmodel = "./models/m"\n'
                                              '[encoding]\nlayer = 8\nmax_length = 128\n')
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    clean_env.chdir(work)
    settings = project_settings()
    assert settings.get("store") == str(tmp_path / "vectors" / "s.zarr")
    assert settings.get("model") == str(tmp_path / "models" / "m")
    assert default_store() == tmp_path / "vectors" / "s.zarr"
    options = options_with_settings({"pooling": "cls"})
    assert options.layers == (8,) and options.max_length == 128 and options.pooling == "cls"
    record = settings.record({"pooling"})
    assert record["store"] == f"file {tmp_path / 'embedstore.toml'}" and record["pooling"] == "flag"
    assert record["dtype"] == "default"


def test_environment_beats_the_file_and_arguments_beat_both(tmp_path, clean_env):
    (tmp_path / "embedstore.toml").write_text('store = "file.zarr"\n[encoding]\nlayer = 8\n')
    clean_env.chdir(tmp_path)
    clean_env.setenv("EMBEDSTORE_STORE", str(tmp_path / "env.zarr"))
    clean_env.setenv("EMBEDSTORE_LAYER", "4")
    assert default_store() == tmp_path / "env.zarr"
    assert options_with_settings({}).layers == (4,)
    assert options_with_settings({"layer": 2}).layers == (2,)
    assert project_settings().record()["layer"] == "env EMBEDSTORE_LAYER"


@pytest.mark.parametrize("content, message", [
    ('stor = "x"\n', r"embedstore.toml: stor: unknown key \(did you mean 'store'\?\); allowed: store, model, encoding"),
    ('[encoding]\nlayers = 3\n', r"embedstore.toml: encoding.layers: unknown key"),
    ('[encoding]\nmax_length = "long"\n', r"embedstore.toml: encoding.max_length: 'long'; expected a whole number"),
    ('store = \n', r"embedstore.toml: not readable TOML"),
])
def test_a_bad_file_is_one_error_naming_the_key(tmp_path, clean_env, content, message):
    (tmp_path / "embedstore.toml").write_text(content)
    clean_env.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        project_settings()


def test_a_bad_variable_is_named(tmp_path, clean_env):
    clean_env.chdir(tmp_path)
    clean_env.setenv("EMBEDSTORE_MAX_LENGTH", "lots")
    with pytest.raises(ConfigError, match=r"EMBEDSTORE_MAX_LENGTH='lots': expected a whole number"):
        project_settings()


def test_commands_take_store_and_model_from_the_project_file(tiny_model_dir, tmp_path, clean_env):
    (tmp_path / "embedstore.toml").write_text(f'store = "vec/project.zarr"\nmodel = "{tiny_model_dir}"\n')
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    clean_env.chdir(tmp_path)
    r = CliRunner().invoke(app, ["encode", "texts.txt", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["store"] == str(tmp_path / "vec" / "project.zarr") and report["encoded"] == 2
    assert report["settings"]["store"].startswith("file ") and report["settings"]["model"].startswith("file ")
    assert (tmp_path / "vec" / "project.zarr").is_dir()
    # a flag still wins, and says so
    r = CliRunner().invoke(app, ["encode", "texts.txt", "--store", str(tmp_path / "flag.zarr"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["store"] == "flag" and (tmp_path / "flag.zarr").is_dir()


def test_the_settings_names_and_types_are_the_encoding_options_fields():
    from dataclasses import fields

    from embedstore.encoding.options import EncodeOptions
    from embedstore.encoding.settings import ENCODING_KEYS, NAMES

    assert set(ENCODING_KEYS) == {f.name for f in fields(EncodeOptions)} - {"model", "fingerprint", "layers"} | {"layer"}
    assert NAMES == ("store", "model", *ENCODING_KEYS) and set(ENV) == set(NAMES)


def test_every_encoding_option_is_a_setting_and_its_spelled_out_default_wins_over_one(tmp_path, clean_env):
    (tmp_path / "embedstore.toml").write_text('[encoding]\nquantize = "int8"\n')
    clean_env.chdir(tmp_path)
    assert options_with_settings({}).quantize == "int8"
    assert options_with_settings({"quantize": "none"}).quantize is None  # the flag's default beats the file
    clean_env.setenv("EMBEDSTORE_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="precision: bf16 and quantize: int8"):
        options_with_settings({})
    assert options_with_settings({"quantize": "none"}).precision == "bf16"
    assert options_with_settings({"quantize": "none", "precision": "fp32"}).precision is None
    clean_env.setenv("EMBEDSTORE_MAX_LENGTH", "many")
    with pytest.raises(ConfigError, match="EMBEDSTORE_MAX_LENGTH='many': expected a whole number"):
        options_with_settings({})
