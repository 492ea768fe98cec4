"""Every error that reaches the CLI is one `error:` line and a non-zero exit; a traceback only when asked for
(`embedstore --debug ...` or EMBEDSTORE_DEBUG=1). Issue 13, D7."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import embedstore.data.tasks as tasks_module
from embedstore.base.errors import InputError
from embedstore.cli.app import app
from embedstore.cli.common import DEBUG_ENV

runner = CliRunner()


def predict_file(tmp_path, *global_options):
    """`predict --file` reads the file's rows (`data.tasks.load_rows`, as every command reads rows) before anything
    else, so a fault injected in that reader is what fails."""
    file = tmp_path / "texts.txt"
    file.write_text("a text\n")
    return runner.invoke(app, [*global_options, "predict", "--pipeline", str(tmp_path / "pipe"), "--file", str(file)])


def fail_with(monkeypatch, error: BaseException) -> None:
    def load_rows(*args, **kwargs):
        raise error

    monkeypatch.setattr(tasks_module, "load_rows", load_rows)


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def test_an_unexpected_error_is_one_line_naming_its_type(tmp_path, monkeypatch):
    fail_with(monkeypatch, RuntimeError("boom\n  on a second line"))
    r = predict_file(tmp_path)
    assert r.exit_code == 1
    assert r.stderr == ("error: RuntimeError: boom on a second line (an unexpected error; run with --debug for "
                        "the traceback)\n")
    assert "Traceback" not in r.output


def test_an_os_error_is_one_line(tmp_path, monkeypatch):
    fail_with(monkeypatch, PermissionError(13, "Permission denied", "/ro/out"))
    r = predict_file(tmp_path)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: PermissionError: [Errno 13] Permission denied: '/ro/out'")


def test_a_library_error_keeps_its_own_message(tmp_path, monkeypatch):
    fail_with(monkeypatch, InputError("texts.txt: line 3: field 'text' is empty; expected a non-empty text"))
    r = predict_file(tmp_path)
    assert r.exit_code == 1
    assert r.stderr == "error: texts.txt: line 3: field 'text' is empty; expected a non-empty text\n"


@pytest.mark.parametrize("how", ["option", "environment"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), InputError("bad row")])
def test_debug_lets_the_traceback_through(tmp_path, monkeypatch, how, error):
    fail_with(monkeypatch, error)
    if how == "environment":
        monkeypatch.setenv(DEBUG_ENV, "1")
    r = predict_file(tmp_path, *(["--debug"] if how == "option" else []))
    assert r.exception is error and "error:" not in r.stderr


def test_debug_is_not_sticky(tmp_path, monkeypatch):
    fail_with(monkeypatch, RuntimeError("boom"))
    assert predict_file(tmp_path, "--debug").exception is not None
    r = predict_file(tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith("error: RuntimeError: boom")


def test_ctrl_c_exits_130_with_one_line(tmp_path, monkeypatch):
    fail_with(monkeypatch, KeyboardInterrupt())
    r = predict_file(tmp_path)
    assert r.exit_code == 130 and r.stderr.startswith("interrupted:") and r.stderr.count("\n") == 1


def test_usage_errors_keep_typers_exit_code(tmp_path):
    r = runner.invoke(app, ["predict"])
    assert r.exit_code == 2 and "--pipeline" in r.output


def test_predict_refuses_a_file_given_as_a_text(tmp_path):
    """`predict -p P data.tsv` names the file, not a text to classify: one line pointing at --file, before any
    pipeline is read (classifying the string "data.tsv" would be silently wrong)."""
    file = tmp_path / "q.tsv"
    file.write_text("text\nhello\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", "--pipeline", str(tmp_path / "no-pipe"), str(file)])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1
    assert f"pass it with --file {file}" in r.output


def test_the_command_ends_its_process_without_teardown_but_runs_the_exit_handlers(tmp_path: Path) -> None:
    """`main` ends with `cli.app.leave`: a thread that is not a daemon is waited for, then exit handlers run, and
    the status is SystemExit's, while the interpreter's teardown (1.0-1.7 s of freeing torch and friends) is skipped,
    so an object's finalizer never runs."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import atexit, sys, threading, time
        class Teardown:
            def __del__(self):
                print("teardown ran", flush=True)
        kept = Teardown()
        atexit.register(lambda: print("exit handler ran", flush=True))
        def late_write():
            time.sleep(0.3)
            print("background thread finished", flush=True)
        import embedstore.cli.app as app
        leave = app.leave
        def leave_with_a_thread_running(code):
            threading.Thread(target=late_write).start()  # not a daemon: an exit waits for it
            leave(code)
        app.leave = leave_with_a_thread_running
        sys.argv = ["embedstore", *sys.argv[1:]]
        app.main()
    """))
    done = subprocess.run([sys.executable, str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("embedstore ") for line in done.stdout.splitlines())
    assert "exit handler ran" in done.stdout
    assert done.stdout.index("background thread finished") < done.stdout.index("exit handler ran")
    assert "teardown ran" not in done.stdout
    usage = subprocess.run([sys.executable, str(script), "no-such-command"], capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 2 and "No such command" in usage.stderr and "exit handler ran" in usage.stdout
