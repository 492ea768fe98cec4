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
