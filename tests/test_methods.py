"""Issue 30.7: a sweep method's facts in one table, read by cells, experiments, context, resources and report."""
from __future__ import annotations

from embedstore.study.experiments import RUNNERS
from embedstore.study.methods import ADAPT_METHODS, ALIGNER_METHODS, METHODS, PAIR_METHODS, TABLE
from embedstore.text_training.adapt import METHODS as ADAPT_COMMAND_METHODS
from embedstore.data.tasks import ROLES


def test_every_method_runs_on_a_known_runner_roles_and_adapt_method():
    assert METHODS[:4] == ("english", "native", "translated", "translate-test")  # table order is report order
    for method in TABLE.values():
        assert method.runner in RUNNERS
        assert {method.train_role, method.test_role} <= set(ROLES)
        assert method.adapt is None or method.adapt in ADAPT_COMMAND_METHODS
        assert (method.runner == "adapted") == (method.adapt is not None)
        assert not method.share or (method.aligner and not method.pairs)  # share's aligner trains on task rows


def test_derived_sets_are_the_tables_columns():
    assert ALIGNER_METHODS == {"langalign", "reverse", "ablation-share", "langalign-e2e", "adapt-align+langalign"}
    assert PAIR_METHODS == {"langalign", "reverse", "langalign-e2e", "adapt-simcse", "adapt-align",
                            "adapt-align+langalign"}
    assert ADAPT_METHODS == {"adapt-lora": "lora", "adapt-simcse": "simcse", "adapt-align": "align",
                             "adapt-align+langalign": "align"}


def test_a_cell_wants_a_gpu_when_its_method_trains_on_text_unless_its_table_pins_the_cpu():
    from types import SimpleNamespace

    from embedstore.study.resources import cell_resources

    config = SimpleNamespace(e2e={"device": "cpu"}, adapt={})
    wants = {m: cell_resources(SimpleNamespace(method=m), config).wants_gpu for m in METHODS}
    # langalign-e2e is pinned to the CPU; lora-ta trains on text under [adapt] like the adapt-* methods
    assert {m for m, gpu in wants.items() if gpu} == set(ADAPT_METHODS) | {"lora-ta"}
