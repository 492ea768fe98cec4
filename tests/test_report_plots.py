"""The report's figures (issue 29.6), checked as figure objects, not pixels: dots and intervals on one axis shared
by every panel, a legend, a caption saying what the intervals are, pair budgets named as pairs; the cosine figure
stands beside retrieval P@1 on axes that span the data. (The ablations figure's reference lines:
tests/test_report.py.)"""
from __future__ import annotations

from embedstore.study.report_data import Row, Stat
from embedstore.study.report_plots import cosine_figure, scores_figure


def row(method: str, aligner: str | None = None, pairs: int | None = None) -> Row:
    return Row(method, aligner, pairs, "default", "logistic")


TABLE = {
    row("english"): {500: Stat(0.48, 0.02, 0.03, 10), 2000: Stat(0.55, 0.01, 0.02, 10)},
    row("langalign", "procrustes", 500): {500: Stat(0.57, 0.015, 0.02, 10), 2000: Stat(0.66, 0.01, 0.02, 10)},
    row("langalign", "fc", 5000): {500: Stat(0.59, 0.02, 0.03, 10), 2000: Stat(0.69, 0.012, 0.02, 10)},
    row("ablation-share", "fc"): {500: Stat(0.58, 0.02, 0.03, 10)},
}


def texts(figure) -> str:
    return " ".join(t.get_text() for t in figure.texts)


def test_scores_share_one_axis_have_a_legend_a_caption_and_named_pair_budgets():
    figure = scores_figure(TABLE, "ko · topic", "accuracy")
    panels = figure.axes
    assert len(panels) == 2
    assert all(panels[0].get_shared_x_axes().joined(panels[0], other) for other in panels[1:])
    assert panels[0].get_xlim() == panels[1].get_xlim()
    low, high = panels[0].get_xlim()
    assert 0.4 < low < 0.48 - 0.02 and 0.69 + 0.012 < high < 0.8  # the data's span, not 0-1
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert "langalign fc · 5k pairs" in labels and "langalign procrustes · 500 pairs" in labels
    legend = [t.get_text() for lg in figure.legends for t in lg.get_texts()]
    assert {"langalign", "ablation-share", "english (reference)"} <= set(legend)
    assert "95 % interval" in texts(figure) and "10 seeds" in texts(figure)
    for panel in panels:  # English-only is a reference line in every panel, the methods are dots with intervals
        assert any(line.get_linestyle() == "--" for line in panel.lines)
        assert panel.containers and all(c.has_xerr for c in panel.containers)


def test_cosine_stands_beside_retrieval_on_axes_that_show_the_differences():
    groups = {"ko procrustes 5k": {"en_tr": Stat(0.81, 0.002, 0.01, 5), "aligned_tr": Stat(0.86, 0.002, 0.01, 5),
                                   "aligned_en": Stat(0.83, 0.002, 0.01, 5), "shuffled": Stat(0.78, 0.002, 0.01, 5),
                                   "p1_raw": Stat(0.62, 0.01, 0.02, 5), "p1_aligned": Stat(0.81, 0.01, 0.02, 5)},
              "ko meanshift": {"en_tr": Stat(0.81, 0.002, 0.01, 5), "aligned_tr": Stat(0.85, 0.002, 0.01, 5),
                               "aligned_en": Stat(0.84, 0.002, 0.01, 5), "shuffled": Stat(0.80, 0.002, 0.01, 5),
                               "p1_raw": Stat(0.62, 0.01, 0.02, 5), "p1_aligned": Stat(0.63, 0.01, 0.02, 5)}}
    figure = cosine_figure(groups)
    cosine, retrieval = figure.axes
    assert cosine.get_ylabel() == "cosine similarity" and retrieval.get_ylabel().startswith("retrieval P@1")
    low, high = cosine.get_ylim()
    assert 0.7 < low and high < 0.9  # not 0-1: the 0.01 differences are visible
    assert all(ax.get_legend() is not None for ax in (cosine, retrieval))
    assert "95 % interval" in texts(figure)
    assert [t.get_text() for t in retrieval.get_xticklabels()] == list(groups)


def test_cosine_without_retrieval_records_is_one_panel():
    groups = {"ja procrustes all": {name: Stat(0.8, float("nan"), float("nan"), 1)
                                    for name in ("en_tr", "aligned_tr", "aligned_en", "shuffled")}}
    figure = cosine_figure(groups)
    assert len(figure.axes) == 1 and "1 seeds" in texts(figure)
