"""Progress on a stream that is not a terminal (issue 13 D8): a line at a steady interval, not silence until the end."""
from __future__ import annotations

import io
import re
import time

from rich.progress import Progress

from embedstore.base.progress import (
    LogProgress,
    RateColumn,
    make_progress,
    progress_bar,
)


def test_a_bar_on_a_non_terminal_prints_lines_while_it_runs():
    out = io.StringIO()
    bar = make_progress(RateColumn("texts"), file=out, interval=0.05)
    assert isinstance(bar, LogProgress)
    with bar:
        task = bar.add_task("encoding", total=1000, loss=0.5, last="text")
        for _ in range(10):
            bar.advance(task, 50)
            time.sleep(0.03)
        running = out.getvalue().splitlines()  # printed before the bar stopped
    assert len(running) >= 2, running
    line = running[-1]
    assert re.fullmatch(r"encoding: \d{2,3}/1,000 texts \(\d+%\), [\d,.]+/s, elapsed 0:00:00, left 0:00:\d\d, "
                        r"loss 0\.5", line), line
    final = out.getvalue().splitlines()[-1]
    assert final.startswith("encoding: 500/1,000 texts (50%), ") and "left" in final


def test_every_bar_built_here_logs_when_its_stream_is_not_a_terminal(capsys):
    """pytest captures stdout, so it is not a terminal: the encode bar (drawn on stdout) gets the log lines too."""
    bar = progress_bar("texts")
    assert isinstance(bar, LogProgress)
    with bar:
        bar.add_task("encoding", total=4, completed=4)
    assert capsys.readouterr().out.startswith("encoding: 4/4 texts (100%), ")
    assert type(progress_bar("texts", enabled=False)) is Progress  # disabled bars stay silent


def test_a_log_bar_prints_its_first_line_as_the_task_starts():
    """A step of minutes must show life at once, not after the first interval (issue 29.3)."""
    out = io.StringIO()
    with make_progress(RateColumn("texts"), file=out, interval=60) as bar:
        bar.add_task("scoring", total=10)
        assert out.getvalue().startswith("scoring: 0/10 texts (0%)")


def test_steps_deep_in_a_job_print_a_line_only_when_the_job_reports_them(capsys):
    from embedstore.base.progress import note_step, reporting_steps

    note_step("silent: nobody asked")
    with reporting_steps(False):
        note_step("silent too")
    with reporting_steps(True):
        note_step("exporting the graph")
    err = capsys.readouterr().err
    assert "silent" not in err and re.fullmatch(r"\[\s*\d+\.\d s\] exporting the graph\n", err), err


def test_the_api_shows_progress_by_default_only_to_a_watcher(monkeypatch):
    import inspect

    import embedstore.api as api
    from embedstore.base import progress

    class Screen:
        is_terminal, is_jupyter = True, False

    with_progress = [fn for fn in {*api.COMMANDS.values(), api.encode}
                     if "progress" in inspect.signature(fn).parameters]
    assert len(with_progress) >= 15  # every API function with a progress option leaves it to `watched`
    assert not [fn.__name__ for fn in with_progress if inspect.signature(fn).parameters["progress"].default is not None]
    monkeypatch.setattr(progress, "Console", Screen)
    assert progress.watched(None) is True and progress.watched(False) is False
    monkeypatch.setattr(Screen, "is_terminal", False)
    assert progress.watched(None) is False and progress.watched(True) is True

    import embedstore.encoding.encode as encode_module

    seen = []
    monkeypatch.setattr(encode_module, "embed", lambda texts, **kw: seen.append(kw["progress"]))
    monkeypatch.setattr(Screen, "is_terminal", True)
    api.encode(["a text"])
    monkeypatch.setattr(Screen, "is_terminal", False)
    api.encode(["a text"])
    assert seen == [True, False]


def test_an_encode_says_when_it_starts_exporting_a_graph(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The first ONNX encode of a model exports and checks a graph (a minute on a real model): a line says so
    before it starts. (The export itself is stopped here: its line is what is tested.)"""
    import pytest

    from embedstore.base.errors import EmbedstoreError
    from embedstore.encoding import onnx_backend
    from embedstore.encoding.encode import encode
    from embedstore.encoding.options import ComputeOptions, EncodeOptions

    def stop(*args):
        raise EmbedstoreError("stopped after the line")

    monkeypatch.setattr(onnx_backend, "_run_in_child", stop)
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EmbedstoreError, match="stopped after the line"):
        encode(["a text", "another"], store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir)),
               compute=ComputeOptions(backend="onnx"), progress=True)
    assert "exporting the ONNX graph of" in capsys.readouterr().err


def test_predictions_show_the_encode_bar_on_stderr_on_long_inputs(tiny_model_dir, fold_table, tmp_path, monkeypatch,
                                                                 capsys):
    """`Pipeline.predict` and `Pipeline.vectors` (issue 29.3): the encode's bar goes to stderr, so predictions piped
    to a file stay whole; by default (progress=None) only to a person watching, and only on inputs of
    `LONG_INPUT` texts or more (`base.progress.watched_long`); `progress=True` shows it whenever texts are encoded."""
    import embedstore.api as api
    from embedstore.base import progress as module

    store, model = tmp_path / "s.zarr", str(tiny_model_dir)
    api.train_head(fold_table(12), text_column="en", out=tmp_path / "pipe", store=store, model=model, progress=False)
    pipe = api.load_pipeline(tmp_path / "pipe", store=store, model=model)
    capsys.readouterr()
    assert len(pipe.predict([f"새 문장 {i}" for i in range(3)], progress=True)) == 3
    out, err = capsys.readouterr()
    assert out == "" and "encoding: 3/3 texts (100%)" in err
    monkeypatch.setattr(module, "LONG_INPUT", 4)
    monkeypatch.setattr(module, "watched", lambda progress: True)  # a person watches
    pipe.predict([f"짧은 입력 {i}" for i in range(3)])
    assert capsys.readouterr() == ("", "")
    assert pipe.vectors([f"긴 입력 {i}" for i in range(4)]).shape[0] == 4
    out, err = capsys.readouterr()
    assert out == "" and "encoding: 4/4 texts (100%)" in err
    monkeypatch.setattr(module, "watched", lambda progress: False)  # output to a file or a pipe
    pipe.predict([f"로그 입력 {i}" for i in range(4)])
    assert capsys.readouterr() == ("", "")


def test_cli_predict_keeps_its_results_alone_on_stdout(tiny_model_dir, fold_table, tmp_path):
    from typer.testing import CliRunner

    import embedstore.api as api
    from embedstore.cli.app import app

    store, model = tmp_path / "s.zarr", str(tiny_model_dir)
    api.train_head(fold_table(12), text_column="en", out=tmp_path / "pipe", store=store, model=model, progress=False)
    r = CliRunner().invoke(app, ["predict", "-p", str(tmp_path / "pipe"), "하나", "둘", "--store", str(store),
                                 "--model", model])
    assert r.exit_code == 0, r.output
    assert [line.split()[-1] for line in r.stdout.splitlines()] == ["하나", "둘"], (r.stdout, r.stderr)
    assert "encoding: 2/2 texts (100%)" in r.stderr
