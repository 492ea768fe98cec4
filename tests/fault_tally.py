"""The count issue 28 asks the closing note for: how many fault cases the tests tried, and how many of them gave a
silent wrong answer (goal: 0), measured by the run that tried them rather than counted by hand.

What counts as a fault case:
- each run of a test marked `@pytest.mark.fault("class")` (a damaged chunk, a stale shard, a kill -9, a crafted
  file...; a parametrized test counts once per parameter set). Its test asserts that the fault is refused in one
  line or answered rightly, so a pass is a fault handled and a failure is a fault not handled as promised (a silent
  wrong answer or a refusal other than the promised one: read the failure);
- each example of such a test when it is a hypothesis `@given` test (each example is a malformed input of its own),
  counted by wrapping `test.hypothesis.inner_test`, hypothesis' hook for plugins;
- each fault step of the store's state machine (`test_store_states.py`), which tells its outcome itself through
  `record`: refused (a read, write, verify or merge named the damage), right (every read returned the right
  vector), or silent wrong (a read returned another vector without a word: it records that, then fails).

Under pytest-xdist each worker counts its own tests and the controller sums the workers' counts. The summary is
the last lines of pytest's report (`fault cases: ...`), and with `EMBEDSTORE_FAULT_TALLY=FILE` a JSON
file of the same counts by fault class, for the closing note to quote.
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter, defaultdict

import pytest

OUTCOMES = ("refused", "right", "handled", "failed", "silent wrong")
"""handled: a marked test's case that passed (its assertions say whether it had to refuse or answer); failed: one
that did not; refused / right / silent wrong: cases whose test classified their outcome itself (`record`)."""

_counts: dict[str, Counter] = defaultdict(Counter)
_self_counted: set[str] = set()  # nodeids whose test records its own cases


def record(fault: str, outcome: str, nodeid: str | None = None) -> None:
    """One fault case of class `fault` and how it ended (one of `OUTCOMES`)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome: {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    _counts[fault][outcome] += 1
    if nodeid is not None:
        _self_counted.add(nodeid)


def summary() -> dict:
    """The counts so far: by fault class and outcome, and the totals."""
    by_class = {fault: dict(counter) for fault, counter in sorted(_counts.items())}
    totals = Counter()
    for counter in _counts.values():
        totals.update(counter)
    return {"cases": sum(totals.values()), "classes": len(by_class),
            "silent_wrong": totals["silent wrong"], "not_handled": totals["failed"] + totals["silent wrong"],
            "outcomes": dict(totals), "by_class": by_class}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    marker = item.get_closest_marker("fault")
    inner = getattr(getattr(getattr(item, "obj", None), "hypothesis", None), "inner_test", None)
    if marker is None or inner is None:
        yield
        return
    fault = marker.args[0]
    handled = Counter()

    @functools.wraps(inner)
    def counted(*args, **kwargs):
        result = inner(*args, **kwargs)
        handled["examples"] += 1
        return result

    item.obj.hypothesis.inner_test = counted
    try:
        outcome = yield
    finally:
        item.obj.hypothesis.inner_test = inner
    _self_counted.add(item.nodeid)
    if handled["examples"]:
        _counts[fault]["handled"] += handled["examples"]
    if outcome.excinfo is not None:
        _counts[fault]["failed"] += 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A marked test that does not count its own cases is one case, handled if it passed (setup and teardown
    failures too are not handled)."""
    if getattr(report, "node", None) is not None:
        return  # under pytest-xdist: a worker's report, already counted by that worker (`pytest_testnodedown`)
    fault = next(iter(getattr(report, "fault_classes", ())), None)
    if fault is None or report.nodeid in _self_counted or report.skipped:
        return
    if report.when == "call":
        _counts[fault]["handled" if report.passed else "failed"] += 1
    elif report.failed:
        _counts[fault]["failed"] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    # names, not Mark objects: pytest-xdist sends reports from its workers to the controller as plain data
    outcome.get_result().fault_classes = [m.args[0] for m in item.iter_markers("fault")]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its counts to the controller, which sums them (`pytest_testnodedown`)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_tally"] = {fault: dict(counter) for fault, counter in _counts.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    for fault, counter in getattr(node, "workeroutput", {}).get("fault_tally", {}).items():
        _counts[fault].update(counter)


def pytest_terminal_summary(terminalreporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return  # an xdist worker: the controller prints the sum
    counts = summary()
    if not counts["cases"]:
        return
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts["outcomes"].items()))
    terminalreporter.write_line(f"fault cases: {counts['cases']} tried in {counts['classes']} classes ({kinds}); "
                                f"silent wrong answers: {counts['silent_wrong']}; not handled as promised: "
                                f"{counts['not_handled']}")
    if path := os.environ.get("EMBEDSTORE_FAULT_TALLY"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=1)
        terminalreporter.write_line(f"fault cases by class: {path}")
