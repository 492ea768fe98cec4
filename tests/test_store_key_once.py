"""The store key is computed once per command and passed on as a `StoreKey` (issue 30.6): encode, the steps that
write (train-aligner, train-head) and the paths that read (evaluate, predict) each call `EncodeOptions.keys` once;
every later step reads and writes under the objects computed then."""
from __future__ import annotations

import pytest

import embedstore.api as api
from embedstore.encoding.options import EncodeOptions
from embedstore.store import StoreKey


@pytest.fixture
def counted(monkeypatch):
    """Every computation of store keys, with the keys it returned."""
    calls: list[list[StoreKey]] = []
    original = EncodeOptions.keys

    def keys(self, spec=None):
        out = original(self, spec)
        calls.append(out)
        return out

    monkeypatch.setattr(EncodeOptions, "keys", keys)
    return calls


@pytest.fixture
def rows(fold_table):
    return fold_table(24)


# auto: measures the engines (heavy)
@pytest.mark.parametrize("backend", ["torch", pytest.param("auto", marks=[pytest.mark.heavy, pytest.mark.parallel])])
def test_encode_computes_its_keys_once(counted, rows, tiny_model_dir, tmp_path, backend):
    report = api.encode_files(rows, columns=["en", "ko"], store=tmp_path / "s.zarr", model=str(tiny_model_dir),
                              layer=[-1, 1], compute=api.ComputeOptions(backend=backend))
    assert report.encoded == 48 and report.model_loaded
    assert len(counted) == 1 and report.keys == counted[0] and all(isinstance(k, StoreKey) for k in report.keys)


def test_each_step_and_each_read_path_computes_the_key_once(counted, rows, tiny_model_dir, tmp_path):
    store, model = tmp_path / "s.zarr", str(tiny_model_dir)
    aligner = api.train_aligner(rows, target_column="ko", out=tmp_path / "al", where={"fold": [0, 1]}, store=store,
                                model=model, arch="procrustes")
    assert len(counted) == 1 and aligner["store_key"] == counted[0][0].to_dict()
    counted.clear()
    head = api.train_head(rows, text_column="en", out=tmp_path / "pipe", aligner=tmp_path / "al",
                          where={"fold": [2]}, share=True, store=store, model=model)
    assert len(counted) == 1 and head["store_key"] == counted[0][0].to_dict()
    counted.clear()
    result = api.evaluate(tmp_path / "pipe", rows, text_column="ko", where={"fold": [2]}, store=store, model=model)
    assert len(counted) == 1 and result["n"] == 8
    counted.clear()
    assert len(api.predict(tmp_path / "pipe", ["새 문장"], store=store, model=model)) == 1
    assert len(counted) == 1


@pytest.mark.parametrize("method", ["langalign",
                                    pytest.param("adapt-simcse", marks=[pytest.mark.heavy, pytest.mark.parallel])])
def test_a_sweep_cell_resolves_its_model_and_computes_its_key_once(counted, tiny_model_dir, tmp_path, monkeypatch,
                                                                   method):
    """A cell's context resolves the model and computes the key once; every step of the cell (vectors, the aligner's
    cache key, the record) and an adapted encoder's check use them. An adapted cell computes one more: its adapted
    model's, once."""
    from embedstore.study.cells import expand, load_config
    from embedstore.study.experiments import prepare, run_cell
    from test_experiments import write_config

    path = write_config(tmp_path, tiny_model_dir, [method], aligners=("procrustes",))
    path.write_text(path.read_text() + "[adapt]\nepochs = 1\nbatch_size = 8\nmax_length = 24\n")
    config = load_config(path)
    cells = expand(config)
    prepare(cells, config, progress=False)
    resolved: list[str] = []
    original = EncodeOptions.resolve

    def resolve(self):
        resolved.append(self.model)
        return original(self)

    monkeypatch.setattr(EncodeOptions, "resolve", resolve)
    counted.clear()
    record = run_cell(cells[0], config)
    adapted = 1 if method.startswith("adapt-") else 0
    assert len(counted) == len(resolved) == 1 + adapted and resolved[0] == str(tiny_model_dir)
    assert record["provenance"]["store_key"] == counted[0][0].to_dict()
    if adapted:
        assert resolved[1] == record["provenance"]["sizes"]["adapt"]["dir"] + "/model"


def test_a_study_resolves_its_model_once_for_its_encode_contexts_and_cells(tiny_model_dir, tmp_path, monkeypatch):
    """`run_study` resolves the model once and passes it on: the encode of every needed text, the cells' context
    ids and every cell (a runner given the spec) use that one resolution, not one per cell. A resolution reads the
    model's fingerprint (`models.model_fingerprint`), so the reads are counted."""
    import embedstore.encoding.models as models
    from embedstore.study.cells import expand, load_config
    from embedstore.study.run import run_study
    from test_experiments import write_config

    config = load_config(write_config(tmp_path, tiny_model_dir, ["english", "langalign"], aligners=("procrustes",)))
    read: list[str] = []
    original = models.model_fingerprint
    monkeypatch.setattr(models, "model_fingerprint", lambda path: read.append(str(path)) or original(path))
    summary = run_study(config, workers=1, progress=False).summary
    assert not summary.errors and len(summary.ok) == len(expand(config)) == 4
    assert read == [str(tiny_model_dir)]


def test_the_analyses_and_mine_compute_their_keys_once(counted, rows, tiny_model_dir, tmp_path):
    store, model, split = tmp_path / "s.zarr", str(tiny_model_dir), api.SplitOptions(test_fraction=0.5)
    common = {"source_column": "en", "target_column": "ko", "store": store, "model": model, "split": split}
    for name, run in [("cosine", lambda: api.analyze_cosine(rows, arch="procrustes", **common)),
                      ("retrieval", lambda: api.analyze_retrieval(rows, arch="procrustes", ks=(1,), csls_k=2, **common)),
                      ("layers", lambda: api.analyze_layers(rows, arch="procrustes", layers=(1, 2), ks=(1,),
                                                            csls_k=2, **common)),
                      ("gradients", lambda: api.analyze_gradients(rows, label_column="label", arch="linear", **common)),
                      ("mine", lambda: api.mine(rows, rows, out=tmp_path / "m.tsv", source_column="en",
                                                target_column="ko", store=store, model=model))]:
        counted.clear()
        run()
        assert len(counted) == 1, f"{name}: {len(counted)} computations of the store key"
