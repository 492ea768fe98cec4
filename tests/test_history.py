"""One training-history shape (base.history) for the vector and the text loops; older records of either shape
still read."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.base.history import History, read_history
from embedstore.estimators.training import Recipe, train

#: What each loop wrote before the shapes were one (the text loop's epoch 0 is the untrained model).
OLD_VECTOR = {"epochs": [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.8}], "best_epoch": 1, "best_val_loss": 0.8,
              "stopped_early": False, "seconds": 0.5, "precision": "fp32", "recipe": {"lr": 0.001}}
OLD_TEXT = {"epochs": [{"epoch": 0, "step": 0, "train_loss": None, "val_loss": 1.1, "val_accuracy": 0.3},
                       {"epoch": 1, "step": 2, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.6,
                        "train_seconds": 1.5}],
            "step_losses": [1.05, 0.95], "best_epoch": 1, "best_val_loss": 0.9, "stopped_early": False,
            "steps_per_epoch": 2}


def test_the_vector_loop_writes_the_one_shape():
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    recipe = Recipe(lr=0.01, batch_size=16, max_epochs=2, patience=5, weight_decay=0.0)
    _, history = train(lambda: nn.Linear(4, 4), nn.functional.mse_loss, x[:32], x[:32], x[32:], x[32:], recipe)
    record = history.to_dict()
    assert set(record) == set(History().to_dict())
    assert record["steps_per_epoch"] == 2 and record["step_losses"] == [] and record["seconds"] > 0
    assert read_history(json.loads(json.dumps(record))) == record  # round-trips through JSON unchanged


@pytest.mark.parametrize("old", [OLD_VECTOR, OLD_TEXT], ids=["vector", "text"])
def test_older_records_of_either_loop_read_in_the_one_shape(old):
    read = read_history(old)
    assert set(read) == set(History().to_dict())
    assert {k: read[k] for k in old} == old  # what the record held is kept as it was
    assert read["step_losses"] == old.get("step_losses", []) and read["steps_per_epoch"] == old.get("steps_per_epoch")


def test_a_history_with_a_field_no_version_wrote_is_refused_by_name():
    with pytest.raises(ConfigError, match="run.json: history: unknown field 'val_los'"):
        read_history({**OLD_TEXT, "val_los": 1.0}, "run.json: history")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        read_history([1, 2])


def test_a_finished_text_run_written_in_the_older_shape_reads_in_the_one_shape(tmp_path):
    from embedstore.text_training.run import _finished

    identity = {"command": "tune", "seed": 0}
    path = tmp_path / "embedstore-tune.json"
    path.write_text(json.dumps({"identity": identity, "history": OLD_TEXT, "steps": 2, "resumed_from_step": 0}))
    record = _finished(path, identity, tmp_path)
    assert record["history"] == {**History().to_dict(), **OLD_TEXT} and record["steps"] == 2
