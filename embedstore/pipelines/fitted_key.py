"""Which store key a saved aligner or head was fitted on, and the refusal to use it on vectors of another.

Why: an estimator fitted on one layer (or model, pooling, length, prefix, precision) runs without complaint
on vectors of another and answers nonsense; the key it records in its provenance makes the mix-up an error.
"""
from __future__ import annotations

from pathlib import Path

from embedstore.base.errors import ConfigError
from embedstore.estimators.artifacts import read_config
from embedstore.store import StoreKey


def fitted_key(directory: Path) -> StoreKey:
    """The store key recorded in a saved estimator's provenance (`provenance.store_key`)."""
    recorded = read_config(directory)["provenance"]
    raw = recorded.get("store_key") if isinstance(recorded, dict) else None
    if not isinstance(raw, dict):
        raise ConfigError(f"{directory}: provenance.store_key: {raw!r}; expected the store key its vectors "
                          "came from (estimators saved by train-aligner and train-head record it)")
    try:
        return StoreKey.from_dict(raw)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{directory}: provenance.store_key: {raw!r} is not a store key ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"{directory}: provenance.store_key.{e}") from None


def check_fitted_key(directory: Path, key: StoreKey, what: str) -> None:
    """Refuse the estimator saved in `directory` (`what`: "aligner" or "head") unless it was fitted on `key`."""
    fitted = fitted_key(directory)
    if fitted != key:
        raise ConfigError(f"{directory}: the {what} was fitted on vectors of {fitted.describe()}; "
                          f"these vectors are {key.describe()}")
