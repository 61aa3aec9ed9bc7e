"""Comparing runs: rows matched by label, differences beyond the noise of the test set marked
(non-overlapping 95% Wilson intervals) and differences within it not; rows a run lacks are "not
tested"; every number on the page is a run's scorecard.json's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import medrobust as mr
from medrobust.evaluation.robustness_curve import wilson_interval
from medrobust.evaluation.scorecard import SCORECARD_FILE, build_scorecard
from medrobust.report.compare import RULE, Comparison, compare_runs

N = 200
WHITE = "white-box gradient attacker"
TRANSFER = "transfer attacker from resnet18"


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval, written out here (apart from the code under test)."""
    z, p = 1.959963984540054, k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def write_scorecard_run(run_dir: Path, metrics, accuracies: dict[float, int], clean: int, drop_rows: tuple[str, ...] = ()):
    """A run folder whose scorecard has the white-box row's clean accuracy ``clean``/N and, at each
    budget (grey levels), ``accuracies[g]``/N correct, each with its Wilson interval."""
    run_dir.mkdir()
    doc = build_scorecard(metrics).model_dump(mode="json")
    doc["run"] = run_dir.name
    doc["rows"] = [r for r in doc["rows"] if r["label"] not in drop_rows]
    row = next(r for r in doc["rows"] if r["label"] == WHITE)
    row["n_images"], row["clean_accuracy"], row["clean_interval"] = N, clean / N, list(wilson_interval(clean, N))
    row["points"] = [{"eps": g / 255, "grey_levels": g, "accuracy": k / N, "interval": list(wilson_interval(k, N)),
                      "attack": f"pgd@{g:g}/255"} for g, k in sorted(accuracies.items())]
    (run_dir / SCORECARD_FILE).write_text(json.dumps(doc))
    return doc


@pytest.fixture
def runs(tmp_path: Path, write_run):
    """Run a (the reference) and run b: at 4/255, 100 vs 110 of 200 correct (the intervals overlap); at
    8/255, 60 vs 90 of 200 (they do not); the same clean accuracy; b has no transfer row."""
    metrics = write_run(tmp_path / "source", samples=False, history=False)
    a = write_scorecard_run(tmp_path / "run_a", metrics, {4.0: 100, 8.0: 60}, clean=160)
    b = write_scorecard_run(tmp_path / "run_b", metrics, {4.0: 110, 8.0: 90}, clean=160, drop_rows=(TRANSFER,))
    return tmp_path / "run_a", tmp_path / "run_b", a, b


def test_the_intervals_are_as_the_fixture_says() -> None:
    """The premise of the next tests: 100 vs 110 of 200 overlap, 60 vs 90 of 200 do not."""
    a4, b4, a8, b8 = wilson(100, N), wilson(110, N), wilson(60, N), wilson(90, N)
    assert a4[1] > b4[0]
    assert a8[1] < b8[0]
    assert wilson_interval(60, N) == pytest.approx(a8)


def test_a_difference_beyond_noise_is_marked_and_one_within_is_not(runs) -> None:
    run_a, run_b, _, _ = runs
    c = mr.compare(run_a, run_b)
    assert isinstance(c, Comparison) and c.html is None
    white = c.row(WHITE)
    by_name = {m.name: m for m in white.measures}
    assert set(by_name) == {"clean accuracy", "accuracy at 4/255", "accuracy at 8/255"}
    assert by_name["accuracy at 8/255"].change == [None, "higher"] and by_name["accuracy at 8/255"].beyond_noise(1)
    assert by_name["accuracy at 4/255"].change == [None, "within noise"]
    assert by_name["clean accuracy"].change == [None, "within noise"]
    assert by_name["accuracy at 8/255"].values[1].value == pytest.approx(0.45)
    assert [(r.label, m.name, i) for r, m, i in c.differences()] == [(WHITE, "accuracy at 8/255", 1)]
    # the other direction reads "lower"
    reverse = mr.compare(run_b, run_a)
    assert reverse.row(WHITE).measures[2].change == [None, "lower"]


def test_a_row_missing_in_one_run_is_not_tested(runs) -> None:
    run_a, run_b, _, _ = runs
    c = mr.compare(run_a, run_b)
    transfer = c.row(TRANSFER)
    assert transfer.index[1] is None
    assert all(m.values[1] is None and m.change[1] is None for m in transfer.measures)
    assert not any(r.label == TRANSFER for r, _, _ in c.differences())


def test_the_page_marks_the_difference_states_the_rule_and_quotes_the_scorecards(runs, tmp_path: Path, tagged_page,
                                                                                 page_text) -> None:
    run_a, run_b, a, b = runs
    out = compare_runs([run_a, run_b], tmp_path / "compare.html")
    html = out.read_text()
    tagged_page(html, {"run0": a, "run1": b})
    assert html.count('data-change="higher"') == 1 and html.count('class="beyond"') == 1
    beyond = html[html.index('class="beyond"'):]
    assert beyond[:beyond.index("</td>")].count("45.0%") == 1 and "beyond noise" in beyond[:beyond.index("</td>")]
    white_table = html[html.index(f'data-row="{WHITE}"'):]
    white_table = white_table[:white_table.index("</table>")]
    assert white_table.count('data-change="within noise"') == 2  # clean and 4/255
    text = page_text(html)
    assert RULE in text
    assert "95% Wilson score intervals" in text and "do not overlap" in text
    transfer_table = html[html.index(f'data-row="{TRANSFER}"'):]
    transfer_table = transfer_table[:transfer_table.index("</table>")]
    assert transfer_table.count("not tested") == 5  # clean, 8/255, half-accuracy, flips, score of run b
    assert "<script" not in html and "http" not in html


def test_mr_compare_writes_the_page_only_when_asked(runs, tmp_path: Path) -> None:
    run_a, run_b, _, _ = runs
    out = tmp_path / "out" / "c.html"
    c = mr.compare(run_a, run_b, out=out)
    assert c.html == out and out.is_file()
    assert sorted(p.name for p in run_a.iterdir()) == [SCORECARD_FILE]


def test_runs_without_scorecard_are_compared_from_metrics(tmp_path: Path, write_run) -> None:
    write_run(tmp_path / "old", samples=False, history=False)
    write_run(tmp_path / "new", transfer=False, samples=False, history=False)
    c = mr.compare(tmp_path / "old", tmp_path / "new")
    assert all(r.from_metrics for r in c.runs)
    assert not (tmp_path / "old" / SCORECARD_FILE).exists()  # compare writes nothing into a run
    assert c.row(TRANSFER).index == [1, None]
    assert not c.differences()  # the same metrics: nothing beyond noise


def test_bad_arguments_are_clear_errors(tmp_path: Path, runs) -> None:
    run_a, _, _, _ = runs
    with pytest.raises(ValueError, match="at least two"):
        mr.compare(run_a)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        mr.compare(run_a, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        mr.compare(run_a, tmp_path / "empty")
    with pytest.raises(ValueError, match="is a folder"):
        mr.compare(run_a, run_a, out=tmp_path)


def test_runs_on_other_budgets_or_sizes_are_said_not_like_for_like(tmp_path: Path, write_run) -> None:
    """One model tested at 8/255 only (a quick run) and swept at 1-8/255: its accuracies at 8/255
    may differ beyond noise, but the rows rest on other grids, so nothing is marked and the page
    and the command say why the runs are not like for like."""
    from typer.testing import CliRunner

    from medrobust.cli import app

    metrics = write_run(tmp_path / "source", samples=False, history=False)
    write_scorecard_run(tmp_path / "quick", metrics, {8.0: 0}, clean=160)
    swept = write_scorecard_run(tmp_path / "swept", metrics, {1.0: 150, 2.0: 120, 4.0: 60, 8.0: 40}, clean=160)
    swept["data"]["size"] = 224
    (tmp_path / "swept" / SCORECARD_FILE).write_text(json.dumps(swept))
    c = mr.compare(tmp_path / "quick", tmp_path / "swept", out=tmp_path / "c.html")
    at8 = next(m for m in c.row(WHITE).measures if m.name == "accuracy at 8/255")
    assert at8.change == [None, "other budgets"] and not c.differences()
    setup = c.incomparable()
    assert any("image size (224 vs" in s for s in setup)
    assert any(f"{WHITE} at other budgets (1/255, 2/255, 4/255, 8/255 vs 8/255)" in s for s in setup)
    page = (tmp_path / "c.html").read_text()
    assert "Not like for like" in page and "where the runs can be compared" in page
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "quick"), str(tmp_path / "swept"),
                                      "--out", str(tmp_path / "c2.html")])
    assert result.exit_code == 0, result.output
    assert "not like for like" in result.output and "beyond noise where the runs can be compared" in result.output
