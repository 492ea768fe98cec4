"""Sweep config parsing, validation and grid expansion (embedstore.study.cells)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from embedstore.study.cells import Cell, expand, format_size, load_config, parse_size
from embedstore.base.errors import ConfigError

BASE = """
name = "ko-topic"
results = "results/ko-topic.jsonl"
store = "cache/store.zarr"
model = "multilingual-e5-small"

[grid]
languages = ["ko"]
tasks = ["libreoffice-apps"]
methods = ["english", "translated", "langalign", "reverse"]
task_sizes = ["1k", "5k", "all"]
pair_sizes = ["5k", "all"]
aligners = ["fc", "procrustes"]
seeds = [0, 1, 2]

[tasks.libreoffice-apps]
file = "data/libreoffice_help.en-ko.tsv"
label = "apps"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def with_grid(**overrides: str) -> str:
    """BASE with some `[grid]` lines replaced (value = the TOML right-hand side) or removed (value = None)."""
    lines = []
    for line in BASE.splitlines():
        key = line.split(" = ", 1)[0]
        if key in overrides:
            if overrides[key] is not None:
                lines.append(f"{key} = {overrides[key]}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_expansion_count_baselines_not_multiplied(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    cells = expand(config)
    # per task size and seed: 2 baselines + 2 aligner methods x 2 aligners x 2 pair sizes = 2 + 8 = 10
    assert len(cells) == (2 + 2 * 2 * 2) * 3 * 3 == 90
    baselines = [c for c in cells if c.method in ("english", "translated")]
    assert len(baselines) == 2 * 3 * 3
    assert all(c.aligner is None and c.pair_size is None for c in baselines)
    assert {(c.aligner, c.pair_size) for c in cells if c.method == "langalign"} == {
        ("fc", 5000), ("fc", None), ("procrustes", 5000), ("procrustes", None)
    }
    assert len({c.id for c in cells}) == len(cells)


def test_ablations_take_only_the_axes_they_use(tmp_path: Path) -> None:
    text = with_grid(methods='["ablation-omit", "ablation-share", "langalign"]', task_sizes='["1k"]', seeds="[0]")
    cells = expand(load_config(write(tmp_path, text)))
    by_method = {m: [c for c in cells if c.method == m] for m in ("ablation-omit", "ablation-share", "langalign")}
    assert [(c.aligner, c.pair_size) for c in by_method["ablation-omit"]] == [(None, None)]
    assert [(c.aligner, c.pair_size) for c in by_method["ablation-share"]] == [("fc", None), ("procrustes", None)]
    assert len(by_method["langalign"]) == 4
    assert len(cells) == 1 + 2 + 4


def test_unpaired_sizes_run_aligners_that_need_no_pairs_once(tmp_path: Path) -> None:
    """A frontier grid in one config: paired (and seeded) aligners at every pair budget, zero-pair ones at theirs."""
    grid = dict(methods='["langalign"]', task_sizes='["1k"]', seeds="[0]", pair_sizes='["500", "5k"]',
                aligners='["procrustes", "meanshift", "selflearn_seeded"]')
    sizes = {(c.aligner, c.pair_size) for c in expand(load_config(write(tmp_path, with_grid(**grid))))}
    assert sizes == {(a, n) for a in ("procrustes", "meanshift", "selflearn_seeded") for n in (500, 5000)}
    text = with_grid(**grid).replace("seeds = [0]", 'seeds = [0]\nunpaired_sizes = ["all"]')
    sizes = {(c.aligner, c.pair_size) for c in expand(load_config(write(tmp_path, text)))}
    assert sizes == {("procrustes", 500), ("procrustes", 5000), ("selflearn_seeded", 500),
                     ("selflearn_seeded", 5000), ("meanshift", None)}


def test_expansion_order_is_deterministic_and_seeds_vary_fastest(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    first, again = expand(config), expand(config)
    assert first == again
    assert [c.seed for c in first[:3]] == [0, 1, 2]
    assert first[0] == Cell("ko", "libreoffice-apps", "english", 1000, None, None, 0, "default", "logistic")


def test_paths_resolve_relative_to_config_and_tasks_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    config = load_config(write(tmp_path, BASE))
    assert config.results == tmp_path / "results" / "ko-topic.jsonl"
    assert config.store == tmp_path / "cache" / "store.zarr"
    assert config.base_dir == tmp_path
    assert config.model == "multilingual-e5-small"
    assert config.tasks == {"libreoffice-apps": {"file": "data/libreoffice_help.en-ko.tsv", "label": "apps"}}
    assert config.grid.task_sizes == (1000, 5000, None)
    assert config.grid.recipes == ("default",) and config.grid.heads == ("logistic",)


def test_defaults_for_name_and_results_and_path_like_model(tmp_path: Path) -> None:
    text = BASE.replace('name = "ko-topic"\n', "").replace('results = "results/ko-topic.jsonl"\n', "")
    text = text.replace('model = "multilingual-e5-small"', 'model = "./models/tuned"')
    config = load_config(write(tmp_path, text))
    assert config.name == "sweep"
    assert config.results == tmp_path / "results" / "sweep.jsonl"
    assert config.model == str(tmp_path / "models" / "tuned")


def test_recipe_and_head_lists_multiply(tmp_path: Path) -> None:
    text = with_grid(methods='["english"]', task_sizes='["1k"]', seeds="[0]")
    text = text.replace("seeds = [0]", 'seeds = [0]\nrecipe = ["default", "paper"]\nhead = ["linear", "mlp"]')
    cells = expand(load_config(write(tmp_path, text)))
    assert {(c.recipe, c.head) for c in cells} == {
        ("default", "linear"), ("default", "mlp"), ("paper", "linear"), ("paper", "mlp")
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (with_grid(methods='["english", "translated", "langalgn"]'),
         r"grid\.methods\[2\]: 'langalgn' is not a method \(did you mean 'langalign'\?\); allowed: english, native"),
        (with_grid(aligners='["fc", "gan"]'), r"grid\.aligners\[1\]: 'gan' is not an aligner; allowed: fc, ae"),
        (with_grid(task_sizes='["1k", "5kk"]'),
         r"grid\.task_sizes\[1\]: '5kk' is not a size; accepted: .*'5k'.*'all'"),
        (with_grid(pair_sizes='["0"]'), r"grid\.pair_sizes\[0\]: '0' is not a size; accepted: a positive whole number"),
        (with_grid(task_sizes='["1k", "1000"]'), r"grid\.task_sizes\[1\]: '1000' repeats grid\.task_sizes\[0\]"),
        (with_grid(seeds='[0, -1]'), r"grid\.seeds\[1\]: -1 is not a non-negative integer"),
        (with_grid(seeds='[]'), r"grid\.seeds: empty"),
        (with_grid(seeds=None), r"grid\.seeds: missing"),
        (with_grid(pair_sizes=None), r"grid\.pair_sizes: missing; methods langalign, reverse"),
        (with_grid(aligners=None), r"grid\.aligners: missing"),
        (BASE.replace("seeds = [0, 1, 2]", 'seeds = [0, 1, 2]\nunpaired_sizes = ["all"]'),
         r"grid\.unpaired_sizes: no aligner of the grid that needs no pairs .* \(those aligners: meanshift"),
        (with_grid(tasks='["sentiment"]'),
         r"grid\.tasks\[0\]: 'sentiment' is not a task with a \[tasks.<name>\] table; allowed: libreoffice-apps"),
        (with_grid(languages='["Korean"]'), r"grid\.languages\[0\]: 'Korean' is not a language code"),
        (BASE.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nseed = 3"),
         r"grid\.seed: unknown key \(did you mean 'seeds'\?\)"),
        (BASE.replace('store = "cache/store.zarr"', 'stor = "cache/store.zarr"'), r"stor: unknown key"),
        (BASE.replace('seeds = [0, 1, 2]', 'seeds = [0, 1, 2]\nrecipe = "fancy"'),
         r"grid\.recipe: 'fancy' is not a recipe; allowed: default, paper"),
        (BASE.replace("[tasks.libreoffice-apps]", "[tasks]\nother = 3\n[tasks.libreoffice-apps]"),
         r"tasks\.other: must be a table"),
        ("name = [", r"not valid TOML"),
        (BASE + '[e2e]\nfreeze_lm = "false"\n', r"e2e\.freeze_lm: 'false'; expected true or false"),
        (BASE + "[e2e]\nepochs = 0\n", r"e2e\.epochs: 0; expected a positive integer"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("15k", 15000), ("1k", 1000), ("1.5k", 1500), ("20000", 20000), (20000, 20000), ("all", None), (" ALL ", None)],
)
def test_parse_size(value: object, expected: int | None) -> None:
    assert parse_size(value, "grid.task_sizes[0]") == expected


@pytest.mark.parametrize("value", ["1.2345k", "-5", "5m", "", True, 0, 2.5])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^grid\.task_sizes\[0\]: "):
        parse_size(value, "grid.task_sizes[0]")


@pytest.mark.parametrize(("size", "text"), [(None, "all"), (5000, "5k"), (1500, "1.5k"), (20000, "20k"), (750, "750")])
def test_format_size_round_trips(size: int | None, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text, "k") == size


def test_cell_id_is_stable_and_sensitive() -> None:
    cell = Cell("ko", "topic", "langalign", 1000, 5000, "fc", 0)
    assert cell.id == Cell("ko", "topic", "langalign", 1000, 5000, "fc", 0, "default", "logistic").id
    assert len(cell.id) == 12
    assert cell.id != dataclasses.replace(cell, seed=1).id
    assert cell.id != dataclasses.replace(cell, pair_size=None).id
    # the hash is of canonical JSON, so it is the same in every process and Python version
    assert cell.canonical_json == (
        '{"aligner":"fc","head":"logistic","language":"ko","method":"langalign","pair_size":5000,'
        '"recipe":"default","seed":0,"task":"topic","task_size":1000}'
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "english", "aligner": "fc"}, r"cell\.aligner: method 'english' uses no aligner"),
        ({"method": "english", "pair_size": 5000}, r"cell\.pair_size: method 'english' trains on no parallel pairs"),
        ({"method": "langalign", "aligner": None, "pair_size": 5000}, r"cell\.aligner: None is not an aligner"),
        ({"method": "ablation-share", "aligner": "fc", "pair_size": 5000}, r"cell\.pair_size"),
        ({"method": "bogus"}, r"cell\.method: 'bogus' is not a method"),
        ({"method": "english", "seed": -1}, r"cell\.seed"),
        ({"method": "english", "task_size": 0}, r"cell\.task_size"),
    ],
)
def test_cell_rejects_impossible_combinations(kwargs: dict[str, object], message: str) -> None:
    fields = {"language": "ko", "task": "t", "task_size": 1000, "pair_size": None, "aligner": None, "seed": 0}
    with pytest.raises(ConfigError, match=message):
        Cell(**{**fields, **kwargs})


def test_describe_names_the_varying_parts() -> None:
    cell = Cell("ko", "topic", "langalign", 1000, None, "fc", 2)
    assert cell.describe() == "ko topic langalign fc pairs=all task=1k seed=2"


def test_head_kinds_and_their_parameters_in_a_sweep_config(tmp_path: Path) -> None:
    """`head` takes registered names and `sklearn:<Class>`; `[heads.<kind>]` holds a kind's parameters, checked
    when the config loads (a typo fails before the sweep), and they enter the cell's context."""
    from embedstore.study.context import context_id

    text = with_grid(methods='["english"]', task_sizes='["1k"]', seeds="[0]")
    text = text.replace("seeds = [0]", 'seeds = [0]\nhead = ["logistic", "sklearn:svm.LinearSVC"]')
    config = load_config(write(tmp_path, text + '\n[heads.logistic]\nC = 0.5\nnormalize = "l2"\n'))
    cells = expand(config)
    assert {c.head for c in cells} == {"logistic", "sklearn:svm.LinearSVC"}
    assert config.head_params == {"logistic": {"C": 0.5, "normalize": "l2"}}
    plain = load_config(write(tmp_path, text))
    logistic = next(c for c in cells if c.head == "logistic")
    other = next(c for c in cells if c.head != "logistic")
    assert context_id(config, logistic, "f") != context_id(plain, logistic, "f")  # its parameters changed
    assert context_id(config, other, "f") == context_id(plain, other, "f")  # another head's did not
    for bad, message in [('[heads.logistic]\nC = -1\n', r"heads\.logistic: LogisticHead C=-1"),
                         ('[heads.logistic]\nnormalize = "l3"\n', r"heads\.logistic: .*normalize='l3'"),
                         ('[heads.mlp]\nC = 1\n', r"heads\.mlp: .*does not take C"),
                         ('[heads.logistic]\nseed = 3\n', r"heads\.logistic\.seed: set by the cell"),
                         ('[heads.svm]\nC = 1\n', r"heads\.svm: head 'svm' is unknown")]:
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, text + "\n" + bad))
    with pytest.raises(ConfigError, match=r"grid\.head\[1\]: .*no class Nope"):
        load_config(write(tmp_path, text.replace("sklearn:svm.LinearSVC", "sklearn:svm.Nope")))


def test_a_config_without_store_or_model_takes_the_project_s(tmp_path: Path, monkeypatch) -> None:
    """Issue 30.1: what a sweep config leaves out comes from EMBEDSTORE_* and embedstore.toml, as for commands."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDSTORE_STORE", str(tmp_path / "project.zarr"))
    monkeypatch.setenv("EMBEDSTORE_MODEL", "org/model")
    monkeypatch.setenv("EMBEDSTORE_LAYER", "3")
    text = BASE.replace('store = "cache/store.zarr"\n', "").replace('model = "multilingual-e5-small"\n', "")
    assert "store =" not in text and "model =" not in text
    config = load_config(write(tmp_path, text))
    assert (config.store, config.model) == (tmp_path / "project.zarr", "org/model")
    assert config.encoding_settings["layers"] == (3,)


def test_a_grid_naming_two_heads_that_train_one_network_with_the_lm_is_refused(tmp_path: Path) -> None:
    """Issue 26: on text, "logistic" and "linear" both train one nn.Linear with the LM (`heads.text_network`), so a
    langalign-e2e or lora-ta grid listing both would run each cell twice under two names; refused at load, naming the
    grid key, the heads and why. Heads with distinct networks there, and cached methods with both, still load."""
    for method in ("langalign-e2e", "lora-ta"):
        text = with_grid(methods=f'["english", "{method}"]', task_sizes='["1k"]', seeds="[0]")
        twice = text.replace("seeds = [0]", 'seeds = [0]\nhead = ["logistic", "linear"]')
        with pytest.raises(ConfigError, match=r"grid\.head: 'logistic' and 'linear' both train the 'linear' network "
                                              rf"with the LM in {method} cells .*the same run twice"):
            load_config(write(tmp_path, twice))
        assert {c.head for c in expand(load_config(write(tmp_path, twice.replace('"linear"', '"mlp"'))))} == {
            "logistic", "mlp"}
        with pytest.raises(ConfigError, match=r"grid\.head: head 'sklearn:svm\.LinearSVC': has no network to train"):
            load_config(write(tmp_path, twice.replace('"linear"', '"sklearn:svm.LinearSVC"')))
    cached = with_grid(methods='["english", "langalign"]').replace("seeds = [0, 1, 2]",
                                                                    'seeds = [0, 1, 2]\nhead = ["logistic", "linear"]')
    assert {c.head for c in expand(load_config(write(tmp_path, cached)))} == {"logistic", "linear"}
