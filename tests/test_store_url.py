"""Store URLs (issue 31) stay URLs from the edge to the backend, and need the [s3] extra only when used."""
from __future__ import annotations

import sys

import pytest

from embedstore.api import store_path
from embedstore.base.errors import ConfigError
from embedstore.store import Store
from embedstore.study.cells import load_config

URL = "s3://bucket/prefix/store.zarr"


def test_a_sweep_config_keeps_a_store_url(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(f'store = "{URL}"\nmodel = "tiny"\n[grid]\nlanguages = ["ko"]\ntasks = ["t"]\n'
                    'methods = ["english"]\ntask_sizes = ["all"]\nseeds = [0]\n[tasks.t]\n')
    assert load_config(path).store == URL
    assert store_path(URL) == URL and str(store_path("cache/s.zarr")) == "cache/s.zarr"


def test_a_store_url_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ConfigError, match=r"^a store at s3://bucket/prefix/store.zarr needs the fsspec package: "
                                          r"pip install 'embedstore\[s3\]'$"):
        Store.open(URL)
