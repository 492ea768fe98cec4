"""Experiment cells and the sweep grid that expands into them.

A `Cell` is one experiment of the LangAlign study: a frozen set of choices that maps to exactly one result
record. Its `id` is a hash of its canonical JSON, so a re-run of a sweep recognises the cells it has already
finished. A sweep config (TOML) names a grid of choices; `load_config` validates it strictly (a typo in a
method name must fail before hours of compute, not silently run nothing) and `expand` turns it into cells.

Config file shape::

    name = "shared-ko-topic"                      # optional; default: the file's stem
    results = "results/shared-ko-topic.jsonl"     # optional; default: results/<name>.jsonl
    store = "cache/store.zarr"                    # optional: default the project's (EMBEDSTORE_STORE, ...)
    model = "multilingual-e5-small"               # optional: a model name or a path (`is_model_path`);
                                                  # default the project's (EMBEDSTORE_MODEL, embedstore.toml)

    [grid]
    languages = ["ko"]
    tasks = ["libreoffice-apps"]                  # each needs a [tasks.<name>] table
    methods = ["english", "translated", "langalign", "reverse", "ablation-omit", "ablation-share"]
    task_sizes = ["1k", "5k", "all"]
    pair_sizes = ["5k", "all"]                    # required only when a method trains on parallel pairs
    unpaired_sizes = ["all"]                      # optional: rows of the pair file that aligners needing no
                                                  # pairs (meanshift, whiten, ...) see; default: pair_sizes
    aligners = ["fc", "procrustes"]               # required only when a method uses an aligner
    seeds = [0, 1, 2]
    recipe = "default"                            # optional: a string or a list; default "default"
    head = "logistic"                             # optional: a string or a list; default "logistic"

    [tasks.libreoffice-apps]
    # free-form: read by the cell runner, not here

    [claims]                                      # optional: the arm the study's "LangAlign ..." claims
    langalign = { aligner = "fc", pairs = "5k" }  # read, named before the run (never the best by test mean)

    [heads.logistic]                              # optional: parameters of a head kind (here: fixed C,
    C = 1.0                                       # L2-normalised rows); any `sklearn:<Class>` kind too
    normalize = "l2"

    [e2e]                                         # optional: training on text for method "langalign-e2e"
    epochs = 2                                    # any of E2E_KEYS; seed, head and size come from the cell

    [adapt]                                       # optional: adapting the encoder for the "adapt-*" methods
    epochs = 1                                    # any of ADAPT_KEYS; unset ones take the method's recipe

    [encoding]                                    # optional: how vectors are made (the store key), with
    layer = 8                                     # the model above; any of ENCODING_KEYS, defaults as `encode`
    pooling = "mean"

Relative paths (results, store, a path-like model) are resolved against the config file's directory, so a
config means the same thing whichever directory the sweep is started from. The store, the model and the
`[encoding]` keys a config leaves out come from the project settings (`embedstore.encoding.settings`: environment,
then `embedstore.toml`), then the defaults, as for every other command.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from itertools import product
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedstore.data import selection
from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys, did_you_mean, names_of
from embedstore.estimators.aligners import ALIGNERS as aligner_registry
from embedstore.estimators.aligners.inputs import uses_no_pairs
from embedstore.estimators.heads import DEFAULT_HEAD, HEADS as head_registry, check_head_kind, make_head, text_network
from embedstore.estimators.training import DEFAULT_RECIPE, RECIPES as recipe_registry
from embedstore.encoding.models import is_model_path
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.settings import ENCODING_KEYS, ProjectSettings, default_store, model_with_settings, \
    project_settings
from embedstore.study.methods import ALIGNER_METHODS, METHODS, PAIR_METHODS, TABLE
from embedstore.text_training.options import TrainOptions
from embedstore.store.object_backend import is_url

ALIGNERS: tuple[str, ...] = tuple(aligner_registry)
"""Aligner architectures, in the registry's order (`embedstore.estimators.aligners.ALIGNERS`)."""


def no_pair_aligners() -> tuple[str, ...]:
    """The registered aligners whose pair budget is zero (they fit on unpaired texts), in registry order."""
    return tuple(name for name, cls in aligner_registry.items() if uses_no_pairs(cls))


RECIPES: tuple[str, ...] = tuple(recipe_registry)
HEADS: tuple[str, ...] = tuple(head_registry)
"""Task heads, in the registry's order (`embedstore.estimators.heads.HEADS`)."""

_TOP_KEYS = ("name", "results", "store", "model", "grid", "tasks", "e2e", "adapt", "encoding", "heads", "claims")
CLAIM_KEYS = ("langalign",)
"""`[claims]` keys: the arms a study's claims are read at, named in the config before the run."""
_CELL_OWNED = ("seed", "head")  # a cell's own seed and head, never a table's
ADAPT_KEYS: tuple[str, ...] = (*names_of(TrainOptions, exclude=_CELL_OWNED), "identity_weight")
"""`[adapt]` keys: `embedstore adapt`'s training options (`TrainOptions`' fields) and the align method's
identity weight, for adapt-* cells."""
E2E_KEYS: tuple[str, ...] = (*names_of(TrainOptions, exclude=(*_CELL_OWNED, "size")), "freeze_lm", "train_aligner")
"""`[e2e]` keys: `embedstore finetune`'s options for langalign-e2e cells (the training rows are the cell's
task size)."""
_GRID_KEYS = (
    "languages",
    "tasks",
    "methods",
    "task_sizes",
    "pair_sizes",
    "unpaired_sizes",
    "aligners",
    "seeds",
    "recipe",
    "head",
)
_SIZE_FORMS = "a positive whole number (20000 or '20000'), thousands ('5k', '1.5k') or 'all'"
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_size(value: object, key: str) -> int | None:
    """A data size as written in a config ("15k", "20000", 20000, "all"; None means every row), parsed by the
    same rules as every `--size` option; `key` names the config field in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):  # TOML `true` is not a size
        raise ConfigError(f"{key}: {value!r} is not a size; accepted: {_SIZE_FORMS}")
    try:
        return selection.parse_size(value)
    except ConfigError:
        raise ConfigError(f"{key}: {value!r} is not a size; accepted: {_SIZE_FORMS}") from None


def format_size(size: int | None) -> str:
    """Write a size back the way configs and tables show it (5000 → "5k", None → "all")."""
    if size is None:
        return "all"
    if size >= 1000 and size % 100 == 0:
        thousands = size / 1000
        return f"{thousands:g}k"
    return str(size)


def method_label(method: str, aligner: str | None, pair_size: int | None, pairs_prefix: str = "") -> str:
    """How progress lines and tables name a method: "langalign fc 5k" (the aligner and pair size only where the
    method has them)."""
    pairs = [pairs_prefix + format_size(pair_size)] if method in PAIR_METHODS else []
    return " ".join([method, *([aligner] if aligner is not None else []), *pairs])


@dataclass(frozen=True)
class Cell:
    """One experiment: everything that changes its result, frozen so it can key a results file."""

    language: str
    task: str
    method: str
    task_size: int | None
    pair_size: int | None
    aligner: str | None
    seed: int
    recipe: str = DEFAULT_RECIPE
    head: str = DEFAULT_HEAD

    def __post_init__(self) -> None:
        """Reject impossible combinations here, so a hand-built cell cannot slip past the grid's checks."""
        _check_choice("cell.method", self.method, METHODS)
        _check_choice("cell.recipe", self.recipe, RECIPES)
        check_head_kind(self.head, "cell.head")
        if not isinstance(self.language, str) or not _LANGUAGE_RE.match(self.language):
            raise ConfigError(f"cell.language: {self.language!r} is not a language code like 'ko' or 'zh-Hans'")
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError(f"cell.task: {self.task!r} is not a task name")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"cell.seed: {self.seed!r} is not a non-negative integer")
        for name in ("task_size", "pair_size"):
            size = getattr(self, name)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
                raise ConfigError(f"cell.{name}: {size!r} is not a positive integer or None (all rows)")
        if self.method in ALIGNER_METHODS:
            _check_choice("cell.aligner", self.aligner, ALIGNERS)
        elif self.aligner is not None:
            raise ConfigError(f"cell.aligner: method {self.method!r} uses no aligner, so aligner must be None")
        if self.method not in PAIR_METHODS and self.pair_size is not None:
            raise ConfigError(
                f"cell.pair_size: method {self.method!r} trains on no parallel pairs, so pair_size must be None"
            )

    @property
    def canonical_json(self) -> str:
        """The cell as sorted, compact JSON: the one spelling its id is computed from."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """A short stable hash of the cell, so a results file can say which cells are finished."""
        return hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()[:12]

    @property
    def shared_work(self) -> tuple[Any, ...] | None:
        """What this cell shares its costliest step with, as a key (None: nothing beyond the task's rows): cells
        that differ only in task size (and head) use one fitted aligner or one adapted encoder, made once a sweep
        by the first of them, and an aligner's cells map their rows through it once a process. So a local pool
        runs a key's cells in the process that ran its first one, and never two of its first cells at once
        (`execution._Schedule`). ablation-share fits its aligner on the task rows: each of its cells is a key."""
        method = TABLE[self.method]
        if not (method.aligner or method.adapt):
            return None
        return (self.language, self.task, self.method, self.aligner, self.pair_size, self.seed, self.recipe,
                self.task_size if method.share else None)

    def describe(self) -> str:
        """A one-line human label for progress bars and error listings."""
        parts = [self.language, self.task, method_label(self.method, self.aligner, self.pair_size, "pairs="),
                 f"task={format_size(self.task_size)}", f"seed={self.seed}"]
        if self.recipe != DEFAULT_RECIPE:
            parts.append(f"recipe={self.recipe}")
        if self.head != DEFAULT_HEAD:
            parts.append(f"head={self.head}")
        return " ".join(parts)


@dataclass(frozen=True)
class Grid:
    """The validated `[grid]` table: the choices whose product (minus inapplicable axes) is the sweep."""

    languages: tuple[str, ...]
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    task_sizes: tuple[int | None, ...]
    pair_sizes: tuple[int | None, ...]
    aligners: tuple[str, ...]
    seeds: tuple[int, ...]
    recipes: tuple[str, ...]
    heads: tuple[str, ...]
    #: Sizes for the aligners that need no pairs (their budget is 0 whatever they see): rows of the pair file,
    #: split into unpaired halves. A frontier study runs them once, at "all", beside paired ones at each budget.
    unpaired_sizes: tuple[int | None, ...] = ()

    def sizes_for(self, aligner: str | None) -> tuple[int | None, ...]:
        """The pair sizes a pair method's cells with `aligner` run at."""
        if aligner is not None and self.unpaired_sizes and uses_no_pairs(aligner_registry[aligner]):
            return self.unpaired_sizes
        return self.pair_sizes


@dataclass(frozen=True)
class NamedArm:
    """An arm of the grid named in `[claims]`: what a claim about "LangAlign" reads, fixed before any result
    exists, so it cannot be the arm that happened to score best on the test rows."""

    aligner: str
    pair_size: int | None


@dataclass(frozen=True)
class SweepConfig:
    """A loaded sweep config: paths already absolute, grid validated, task tables kept raw for the runner."""

    name: str
    path: Path
    results: Path
    store: Path | str  # a URL (s3://...) for a store on object storage
    model: str
    grid: Grid
    tasks: dict[str, dict[str, Any]] = field(hash=False)
    e2e: dict[str, Any] = field(default_factory=dict, hash=False)
    adapt: dict[str, Any] = field(default_factory=dict, hash=False)
    encoding_settings: dict[str, Any] = field(default_factory=dict, hash=False)  # validated [encoding], as given
    head_params: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)  # [heads.<kind>] tables
    claims: dict[str, NamedArm] = field(default_factory=dict, hash=False)  # [claims]: arms named before the run

    @property
    def encoding(self) -> EncodeOptions:
        """The sweep's one encoding value: every cell's store key is built from it."""
        return EncodeOptions(model=self.model, **self.encoding_settings)

    @property
    def encoding_changes(self) -> dict[str, Any]:
        """The encoding options that differ from the defaults: part of every cell's context, so changing them
        re-runs cells; empty without an `[encoding]` table, so earlier results keep their context."""
        default = EncodeOptions(model=self.model).to_dict()
        return {k: v for k, v in self.encoding.to_dict().items() if v != default[k]}

    @property
    def base_dir(self) -> Path:
        """The config file's directory: the runner resolves file paths in task tables against it."""
        return self.path.parent


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config (TOML); every error names the file and the offending key."""
    path = Path(path).expanduser().resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def expand(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, in a deterministic order.

    Baselines are not multiplied by aligners or pair sizes (they would be identical runs), and aligner
    methods without a parallel set are not multiplied by pair sizes. Seeds vary fastest, so an interrupted
    sweep leaves whole mean ± CI groups behind rather than one seed of everything.
    """
    grid = config.grid
    cells: list[Cell] = []
    outer = product(grid.languages, grid.tasks, grid.recipes, grid.heads, grid.task_sizes, grid.methods)
    for language, task, recipe, head, task_size, method in outer:
        aligners: tuple[str | None, ...] = grid.aligners if method in ALIGNER_METHODS else (None,)
        for aligner in aligners:
            pair_sizes = grid.sizes_for(aligner) if method in PAIR_METHODS else (None,)
            for pair_size, seed in product(pair_sizes, grid.seeds):
                cells.append(Cell(language, task, method, task_size, pair_size, aligner, seed, recipe, head))
    return cells


def _parse(raw: dict[str, Any], path: Path) -> SweepConfig:
    """Validate the parsed TOML document; raises ConfigError naming the key (the caller adds the file)."""
    check_keys("", raw, _TOP_KEYS)
    base = path.parent
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"name: {name!r} must be a non-empty string of letters, digits, '.', '_' or '-'")
    settings = project_settings()
    results = _path_value(raw, "results", base, default=f"results/{name}.jsonl")
    store = (raw["store"] if is_url(raw.get("store")) else _path_value(raw, "store", base)) if "store" in raw \
        else default_store()  # a URL stays one
    model = raw["model"] if "model" in raw else model_with_settings(None)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model: {model!r} must be a model name or a path to a model directory")
    if "\x00" in model:
        raise ConfigError(f"model: {model!r} contains a NUL character; expected a model name or a path")
    if is_model_path(model):
        model = str((base / Path(model).expanduser()).resolve())

    tasks = raw.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError("tasks: missing; define each task as a [tasks.<name>] table")
    for task_name, table in tasks.items():
        if not isinstance(table, dict):
            raise ConfigError(f"tasks.{task_name}: must be a table ([tasks.{task_name}]), got {table!r}")

    grid_raw = raw.get("grid")
    if not isinstance(grid_raw, dict):
        raise ConfigError("grid: missing; a sweep needs a [grid] table")
    grid = _parse_grid(grid_raw, tuple(tasks))
    e2e = raw.get("e2e", {})
    if not isinstance(e2e, dict):
        raise ConfigError(f"e2e: must be a table ([e2e]), got {e2e!r}")
    check_keys("e2e.", e2e, E2E_KEYS)
    _check_e2e(e2e)
    adapt = raw.get("adapt", {})
    if not isinstance(adapt, dict):
        raise ConfigError(f"adapt: must be a table ([adapt]), got {adapt!r}")
    check_keys("adapt.", adapt, ADAPT_KEYS)
    _check_adapt(adapt)
    encoding = _parse_encoding(_with_settings(raw.get("encoding", {}), settings), model)
    head_params = _parse_heads(raw.get("heads", {}))
    return SweepConfig(name, path, results, store, model, grid, copy.deepcopy(tasks), dict(e2e), dict(adapt),
                       encoding_settings=encoding, head_params=head_params,
                       claims=_parse_claims(raw.get("claims", {}), grid))


def _parse_claims(table: object, grid: Grid) -> dict[str, NamedArm]:
    """`[claims]`: each named arm must be one the grid runs (`langalign` needs the method, the aligner and the
    pair budget in the grid), so a claim can never fall back on another arm."""
    if not isinstance(table, dict):
        raise ConfigError(f"claims: must be a table ([claims]), got {table!r}")
    check_keys("claims.", table, CLAIM_KEYS)
    out = {}
    for key, arm in table.items():
        if not isinstance(arm, dict):
            raise ConfigError(f"claims.{key}: must be a table like {{ aligner = \"fc\", pairs = \"5k\" }}, got {arm!r}")
        check_keys(f"claims.{key}.", arm, ("aligner", "pairs"))
        if "aligner" not in arm or "pairs" not in arm:
            raise ConfigError(f"claims.{key}: needs both aligner and pairs")
        if key not in grid.methods:
            raise ConfigError(f"claims.{key}: the grid runs no {key!r} cells (methods: {', '.join(grid.methods)})")
        if arm["aligner"] not in grid.aligners:
            raise ConfigError(f"claims.{key}.aligner: {arm['aligner']!r} is not in the grid's aligners "
                              f"({', '.join(grid.aligners)})")
        pairs = parse_size(arm["pairs"], f"claims.{key}.pairs")
        if pairs not in grid.sizes_for(arm["aligner"]):
            raise ConfigError(f"claims.{key}.pairs: {arm['pairs']!r} is not among the grid's pair sizes for "
                              f"{arm['aligner']} ({', '.join(format_size(p) for p in grid.sizes_for(arm['aligner']))})")
        out[key] = NamedArm(arm["aligner"], pairs)
    return out
def _parse_heads(table: object) -> dict[str, dict[str, Any]]:
    """`[heads.<kind>]` tables: the parameters of each head kind (`normalize`, `C`, `hidden`, ...), checked by
    building the head now, so a typo fails before the sweep runs."""
    if not isinstance(table, dict):
        raise ConfigError(f"heads: must be a table of [heads.<kind>] tables, got {table!r}")
    for kind, params in table.items():
        check_head_kind(kind, f"heads.{kind}")
        if not isinstance(params, dict):
            raise ConfigError(f"heads.{kind}: must be a table of the head's parameters, got {params!r}")
        for reserved in ("seed", "recipe", "progress", "device"):
            if reserved in params:
                raise ConfigError(f"heads.{kind}.{reserved}: set by the cell or the sweep, not per head")
        try:
            make_head(kind, **params).check_params()
        except ConfigError as exc:
            raise ConfigError(f"heads.{kind}: {exc}") from None
    return copy.deepcopy(table)


def _check_adapt(adapt: dict[str, Any]) -> None:
    """`[adapt]` values as `TrainOptions` and the recipe validate them, when the config loads."""
    if "identity_weight" in adapt and not (isinstance(adapt["identity_weight"], (int, float))
                                           and not isinstance(adapt["identity_weight"], bool)
                                           and adapt["identity_weight"] >= 0):
        raise ConfigError(f"adapt.identity_weight: {adapt['identity_weight']!r}; expected a number >= 0")
    try:
        TrainOptions(**{k: v for k, v in adapt.items() if k != "identity_weight"})
    except ConfigError as e:
        raise ConfigError(f"adapt.{e}") from None


def _check_e2e(e2e: dict[str, Any]) -> None:
    """`[e2e]` values as `TrainOptions` validates them, now rather than in every end-to-end cell after hours of
    others; the two switches must be real booleans (a string "false" would read as true)."""
    for flag in ("freeze_lm", "train_aligner"):
        if flag in e2e and not isinstance(e2e[flag], bool):
            raise ConfigError(f"e2e.{flag}: {e2e[flag]!r}; expected true or false")
    try:
        TrainOptions(**{k: v for k, v in e2e.items() if k not in ("freeze_lm", "train_aligner")})
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"e2e.{e}") from None


def _with_settings(table: object, settings: ProjectSettings) -> object:
    """The `[encoding]` table with the keys it leaves out taken from the project settings."""
    if not isinstance(table, dict):
        return table
    chosen = {name: settings.get(name) for name in ENCODING_KEYS if settings.get(name) is not None}
    return {**chosen, **table}


def _parse_encoding(table: object, model: str) -> dict[str, Any]:
    """Validate `[encoding]` (known keys, one whole layer index, what `EncodeOptions` checks); returns the
    settings as `EncodeOptions` fields."""
    if not isinstance(table, dict):
        raise ConfigError(f"encoding: must be a table ([encoding]), got {table!r}")
    check_keys("encoding.", table, ENCODING_KEYS)
    settings = {k: v for k, v in table.items() if k != "layer"}
    if "layer" in table:
        layer = table["layer"]
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ConfigError(f"encoding.layer: {layer!r} is not a whole layer index (negative counts from the end)")
        settings["layers"] = (layer,)
    try:
        EncodeOptions(model=model, **settings)
    except ConfigError as e:
        raise ConfigError(f"encoding.{e}") from None
    return settings


def _parse_grid(raw: dict[str, Any], task_names: tuple[str, ...]) -> Grid:
    """Validate `[grid]`: known keys, non-empty lists, allowed values, no repeats, required axes present."""
    check_keys("grid.", raw, _GRID_KEYS)
    languages = _string_list(raw, "languages")
    for i, language in enumerate(languages):
        if not _LANGUAGE_RE.match(language):
            raise ConfigError(f"grid.languages[{i}]: {language!r} is not a language code like 'ko' or 'zh-Hans'")
    tasks = _string_list(raw, "tasks")
    for i, task in enumerate(tasks):
        _check_choice(f"grid.tasks[{i}]", task, task_names, what="task with a [tasks.<name>] table")
    methods = _string_list(raw, "methods")
    for i, method in enumerate(methods):
        _check_choice(f"grid.methods[{i}]", method, METHODS)

    task_sizes = _size_list(raw, "task_sizes")
    uses_aligner = [m for m in methods if m in ALIGNER_METHODS]
    uses_pairs = [m for m in methods if m in PAIR_METHODS]
    aligners: tuple[str, ...] = ()
    pair_sizes: tuple[int | None, ...] = ()
    if _axis_wanted(raw, "aligners", uses_aligner, f"need aligners from: {', '.join(ALIGNERS)}"):
        aligners = _string_list(raw, "aligners")
        for i, aligner in enumerate(aligners):
            _check_choice(f"grid.aligners[{i}]", aligner, ALIGNERS, what="aligner")
    if _axis_wanted(raw, "pair_sizes", uses_pairs, "train on parallel pairs and need sizes"):
        pair_sizes = _size_list(raw, "pair_sizes")
    unpaired_sizes: tuple[int | None, ...] = ()
    if "unpaired_sizes" in raw:
        unpaired = [a for a in aligners if uses_no_pairs(aligner_registry[a])]
        if not uses_pairs or not unpaired:
            raise ConfigError("grid.unpaired_sizes: no aligner of the grid that needs no pairs runs in a method "
                              f"with a pair set (those aligners: {', '.join(no_pair_aligners())})")
        unpaired_sizes = _size_list(raw, "unpaired_sizes")

    if "seeds" not in raw:
        raise ConfigError("grid.seeds: missing; list at least one seed, e.g. seeds = [0, 1, 2]")
    seeds = _as_list(raw, "seeds")
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"grid.seeds[{i}]: {seed!r} is not a non-negative integer")
    _check_unique("grid.seeds", seeds)

    recipes = _choice_or_list(raw, "recipe", RECIPES, default=DEFAULT_RECIPE)
    value = raw.get("head", DEFAULT_HEAD)
    heads = tuple(value) if isinstance(value, list) else (value,)
    if not heads:
        raise ConfigError(f"grid.head: empty; give one of: {', '.join(HEADS)}")
    for i, head in enumerate(heads):
        check_head_kind(head, f"grid.head[{i}]" if isinstance(value, list) else "grid.head")
    _check_unique("grid.head", list(heads))
    _check_text_heads(methods, heads)
    return Grid(
        languages=languages,
        tasks=tasks,
        methods=methods,
        task_sizes=task_sizes,
        pair_sizes=pair_sizes,
        aligners=aligners,
        seeds=tuple(seeds),
        recipes=recipes,
        heads=heads,
        unpaired_sizes=unpaired_sizes,
    )


def _check_text_heads(methods: tuple[str, ...], heads: tuple[str, ...]) -> None:
    """A method whose head trains with the LM on text (langalign-e2e, lora-ta) trains the network
    `heads.text_network` names, so two heads with one network there would run the same cells twice under two
    names (and a report would compare a run with itself): refused, as is a head with no network to train."""
    text = [m for m in methods if TABLE[m].text_head]
    if not text:
        return
    seen: dict[str, str] = {}
    for head in heads:
        try:
            network = text_network(head)
        except ConfigError as exc:
            raise ConfigError(f"grid.head: {exc} (methods {', '.join(text)} train their head with the LM)") from None
        if network in seen:
            raise ConfigError(f"grid.head: {seen[network]!r} and {head!r} both train the {network!r} network with the "
                              f"LM in {', '.join(text)} cells (no C search there): the same run twice; list one")
        seen[network] = head


def _axis_wanted(raw: dict[str, Any], key: str, users: list[str], need: str) -> bool:
    """Whether the grid has the axis `key` to read; missing while some `users` (methods) need it is an error."""
    if users and key not in raw:
        raise ConfigError(f"grid.{key}: missing; methods {', '.join(users)} {need}")
    return key in raw


def _check_choice(key: str, value: object, allowed: tuple[str, ...], what: str | None = None) -> None:
    """Raise a ConfigError naming `key`, the bad value, a close match and every allowed value."""
    if value in allowed:
        return
    what = what or key.rsplit(".", 1)[-1].split("[", 1)[0].removesuffix("s")
    hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
    article = "an" if what[0] in "aeiou" else "a"
    raise ConfigError(f"{key}: {value!r} is not {article} {what}{hint}; allowed: {', '.join(allowed)}")


def _as_list(raw: dict[str, Any], key: str) -> list[Any]:
    """The grid value at `key` as a non-empty list (a grid axis with no values would expand to nothing)."""
    value = raw.get(key)
    if not isinstance(value, list):
        raise ConfigError(f"grid.{key}: expected a list, e.g. {key} = [...], got {value!r}")
    if not value:
        raise ConfigError(f"grid.{key}: empty; list at least one value")
    return value


def _string_list(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    """A non-empty list of distinct strings."""
    values = _as_list(raw, key)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ConfigError(f"grid.{key}[{i}]: expected a string, got {value!r}")
    _check_unique(f"grid.{key}", values)
    return tuple(values)


def _size_list(raw: dict[str, Any], key: str) -> tuple[int | None, ...]:
    """A non-empty list of sizes, distinct after parsing (so "1k" and "1000" are caught as the same)."""
    values = _as_list(raw, key)
    sizes = [parse_size(value, f"grid.{key}[{i}]") for i, value in enumerate(values)]
    _check_unique(f"grid.{key}", sizes, shown=values)
    return tuple(sizes)


def _choice_or_list(raw: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> tuple[str, ...]:
    """`recipe`/`head` may be one value (the usual case) or a list of values to compare."""
    value = raw.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"grid.{key}: empty; give one of: {', '.join(allowed)}")
    for i, item in enumerate(values):
        item_key = f"grid.{key}[{i}]" if isinstance(value, list) else f"grid.{key}"
        _check_choice(item_key, item, allowed, what=key)
    _check_unique(f"grid.{key}", values)
    return tuple(values)


def _check_unique(key: str, values: list[Any], shown: list[Any] | None = None) -> None:
    """Repeated grid values would make repeated cells with the same id; name both positions."""
    shown = values if shown is None else shown
    first: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in first:
            j = first[value]
            raise ConfigError(f"{key}[{i}]: {shown[i]!r} repeats {key}[{j}] ({shown[j]!r})")
        first[value] = i


def _path_value(raw: dict[str, Any], key: str, base: Path, default: str | None = None) -> Path:
    """A path-valued key, resolved against the config's directory."""
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"{key}: {value!r} must be a path (relative to the config file)")
    return (base / Path(value).expanduser()).resolve()
