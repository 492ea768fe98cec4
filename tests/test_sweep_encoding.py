"""The sweep config's optional [encoding] table: validated like the rest, carried to every cell's store key."""
from __future__ import annotations

import pytest

from embedstore.base.errors import ConfigError
from embedstore.encoding.options import EncodeOptions
from embedstore.study.cells import expand, load_config
from embedstore.study.experiments import prepare, run_cell
from embedstore.study.context import context_id
from test_cells import BASE, write
from test_experiments import write_config


def test_without_an_encoding_table_the_defaults_hold_and_the_context_is_unchanged(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.encoding == EncodeOptions(model="multilingual-e5-small") and config.encoding_changes == {}
    assert config.model == "multilingual-e5-small"


def test_the_encoding_table_sets_the_options_and_enters_the_context(tmp_path):
    plain = load_config(write(tmp_path, BASE))
    config = load_config(write(tmp_path, BASE + '[encoding]\nlayer = 8\npooling = "cls"\nmax_length = 128\n'
                                              'prefix = ""\ndtype = "float16"\n'))
    assert config.encoding == EncodeOptions(model="multilingual-e5-small", layers=(8,), pooling="cls",
                                            max_length=128, prefix="", dtype="float16")
    assert config.encoding_changes == {"layers": [8], "pooling": "cls", "max_length": 128, "prefix": "",
                                       "dtype": "float16"}
    cell = expand(config)[0]
    assert context_id(config, cell, "f" * 16) != context_id(plain, cell, "f" * 16)


@pytest.mark.parametrize("table, message", [
    ('poling = "cls"', r"encoding.poling: unknown key \(did you mean 'pooling'\?\)"),
    ('model = "x"', r"encoding.model: unknown key"),
    ('layer = "8"', r"encoding.layer: '8' is not a whole layer index"),
    ("layer = true", r"encoding.layer: True is not a whole layer index"),
    ('pooling = "avg"', r"encoding.pooling: 'avg' is not supported; expected one of mean, cls, max"),
    ("max_length = 1", r"encoding.max_length: 1; expected a whole number of tokens, at least 2"),
    ("prefix = 3", r"encoding.prefix: 3; expected a string"),
    ('dtype = "int8"', r"encoding.dtype: 'int8' is not supported"),
])
def test_a_bad_encoding_table_names_the_file_and_the_key(tmp_path, table, message):
    path = write(tmp_path, BASE + "[encoding]\n" + table + "\n")
    with pytest.raises(ConfigError, match=f"{path}: {message}"):
        load_config(path)


def test_an_encoding_that_is_not_a_table_is_refused(tmp_path):
    path = write(tmp_path, 'encoding = "cls"\n' + BASE)
    with pytest.raises(ConfigError, match=r"encoding: must be a table"):
        load_config(path)


def test_cells_use_the_key_the_encoding_table_names(tiny_model_dir, tmp_path):
    path = write_config(tmp_path, tiny_model_dir, ["english"], aligners=("procrustes",))
    path.write_text(path.read_text() + '[encoding]\nlayer = 1\nmax_length = 64\n')
    config = load_config(path)
    cells = expand(config)
    prepare(cells, config, progress=False)
    record = run_cell(cells[0], config)
    key = record["provenance"]["store_key"]
    assert (key["layer"], key["max_length"]) == (1, 64)


def test_end_to_end_cells_refuse_an_encoding_their_graph_does_not_compute(tiny_model_dir, tmp_path):
    # the e2e graph pools the last layer by mean: an aligner fitted on layer-1 vectors cannot sit in it
    path = write_config(tmp_path, tiny_model_dir, ["langalign-e2e"], aligners=("procrustes",))
    path.write_text(path.read_text() + "[e2e]\nepochs = 1\n[encoding]\nlayer = 1\n")
    config = load_config(path)
    with pytest.raises(ConfigError, match=r"langalign-e2e trains through the model's last layer .* layer=1"):
        run_cell(expand(config)[0], config)
