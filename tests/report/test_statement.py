"""statement.html: every number is scorecard.json's or metrics.json's; it names the model, the
classes, the limitations and the requirements it gives evidence for without claiming them; it
prints to a PDF of one to three pages in a real headless Chromium (when installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from medrobust.evaluation.results import RunMetrics, read_metrics
from medrobust.evaluation.scorecard import SCORECARD_FILE, build_scorecard, read_scorecard
from medrobust.report import build_report
from medrobust.report.statement import STATEMENT_FILE, build_statement

from .pdf_text import pdf_pages_text

STATIC_NUMBERS = ["L2", "L0", "95% CI", "(0–100)", "95% interval", "SHA-256", "[0, 1]"]
"""The only digits the statement's own wording may hold: norms and column headers (the requirements'
citations are scorecard.json's, tagged)."""


def _documents(run_dir: Path) -> dict:
    return {"scorecard": json.loads((run_dir / SCORECARD_FILE).read_text()),
            "metrics": json.loads((run_dir / "metrics.json").read_text())}


def test_report_writes_scorecard_and_statement(complete_run) -> None:
    run_dir, metrics, _ = complete_run
    assert (run_dir / STATEMENT_FILE).is_file()
    assert read_scorecard(run_dir) == build_scorecard(read_metrics(run_dir))


def test_every_number_in_the_statement_is_the_scorecards(complete_run, tagged_page) -> None:
    run_dir, metrics, _ = complete_run
    documents = _documents(run_dir)
    page = tagged_page((run_dir / STATEMENT_FILE).read_text(), documents)
    fields = {(source, field) for source, field, _, _ in page.tagged}
    scorecard = documents["scorecard"]
    # every row's numbers are on the page
    for i, row in enumerate(scorecard["rows"]):
        for key in ("label", "clean_accuracy", "clean_interval", "n_images", "half_accuracy_text",
                    "dangerous_flips_text", "score_text", "main_eps"):
            assert ("scorecard", f"/rows/{i}/{key}") in fields, (i, key)
        for j, point in enumerate(row["points"]):
            if point["grey_levels"] > 0:
                assert ("scorecard", f"/rows/{i}/points/{j}/accuracy") in fields, (i, j)
                assert ("scorecard", f"/rows/{i}/points/{j}/interval") in fields, (i, j)
        for k, _ in enumerate(row["detection"]):
            assert ("scorecard", f"/rows/{i}/detection/{k}/detection_rate") in fields
    for key in ("/overall_text", "/model/file", "/model/sha256", "/medrobust_version", "/seed", "/created"):
        assert ("scorecard", key) in fields, key
    assert all(("scorecard", f"/not_tested/{k}") in fields for k in range(len(scorecard["not_tested"])))
    # the defenses' clean cost and the detectors' false alarms, from metrics.json
    assert ("metrics", "/defenses/0/clean_cost_pp") in fields
    for i, det in enumerate(documents["metrics"]["detectors"]):
        assert ("metrics", f"/detectors/{i}/fpr_clean") in fields
        assert all(("metrics", f"/detectors/{i}/fpr_benign/{k}") in fields for k in det["fpr_benign"])
    # no other number: the text outside the tagged values holds digits only in fixed citations and headers
    outside = " ".join(page.outside)
    names = [k for det in documents["metrics"]["detectors"] for k in det["fpr_benign"]]  # names (keys), not numbers
    for phrase in STATIC_NUMBERS + sorted(names, key=len, reverse=True):
        outside = outside.replace(phrase, "")
    assert not re.findall(r"\S*\d\S*", outside), re.findall(r".{30}\d.{30}", outside)


def test_statement_names_model_classes_limitations_and_requirements(complete_run, page_text) -> None:
    run_dir, metrics, _ = complete_run
    text = page_text((run_dir / STATEMENT_FILE).read_text())
    assert metrics.model["file"] in text and metrics.model["sha256"] in text
    assert "Normal, Pneumonia, Pneumothorax" in text
    assert "size 32 x 32" in text and "input input" not in text
    for limitation in ("Physical-world attacks", "poisoning", "Other modalities", "Budgets beyond the largest tested",
                       "query-only attacker: not tested"):
        assert limitation in text, limitation
    assert "Article 15, paragraph 5" in text and "adversarial examples, model evasion" in text
    assert "Artificial Intelligence-Enabled Device Software Functions" in text and "model evasion" in text
    # no claim of compliance or certification; the certificate's own section (randomized smoothing's
    # certified radii, a mathematical guarantee) says what it holds for, and only for the smoothed classifier;
    # the requirements traced say that they decide no compliance, and name the certificate where it is evidence
    certificate = re.search(r"Certified robustness \(a guarantee, apart from the scores\).*?(?=Defenses: cost)", text, re.S)
    assert certificate and "not the base model answering once" in certificate.group(0)
    traced = re.search(r"Requirements traced .*?(?=Definitions)", text, re.S)
    assert traced and "It does not decide compliance" in traced.group(0)
    assert re.findall(r"complian\w*", traced.group(0), re.IGNORECASE) == ["compliance"]
    assert not re.search(r"complian|certifi", text.replace(certificate.group(0), "").replace(traced.group(0), ""),
                         re.IGNORECASE)
    assert "train 60.0%, validation 20.0%, test 20.0% with seed 42" in text
    assert "Normal 20, Pneumonia 20, Pneumothorax 20 (total 60)" in text
    grid = ", ".join(f"{g * 255:g}/255" for g in read_scorecard(run_dir).grid)
    assert grid and f"Every row is scored on the one grid {grid};" in text


def test_statement_traces_each_requirement_to_the_rows(complete_run, tagged_page, page_text) -> None:
    """The traceability table: one row per requirement of scorecard.json's evidence, each value a
    tagged field, the evidence linked to the scorecard row, certificate or section it names, the
    disclaimer above it."""
    run_dir, metrics, _ = complete_run
    html = (run_dir / STATEMENT_FILE).read_text()
    documents = _documents(run_dir)
    evidence = documents["scorecard"]["evidence"]
    assert len(evidence) == 14
    section = html[html.index('<section id="requirements">'):html.index("</section>", html.index('id="requirements"'))]
    page = tagged_page(section, documents)
    fields = {field for source, field, _, _ in page.tagged if source == "scorecard"}
    for i, entry in enumerate(evidence):
        assert f'<tr data-requirement="{entry["requirement"]}">' in section
        for key in ("requirement", "source", "summary", "status"):
            assert f"/evidence/{i}/{key}" in fields, (i, key)
        assert all(f"/evidence/{i}/gaps/{k}" in fields for k in range(len(entry["gaps"])))
    # the disclaimer first, then the table
    assert section.index("/definitions/evidence") < section.index('<table class="evidence">')
    text = page_text(section)
    assert "It does not decide compliance" in text
    art15_5 = re.search(r'<tr data-requirement="EU AI Act Art. 15\(5\)">.*?</tr>', section, re.S).group(0)
    assert re.search(r'<td class="status addressed"><span [^>]*data-field="/evidence/3/status"[^>]*>addressed</span>',
                     art15_5)
    rows = documents["scorecard"]["rows"]
    for i, row in enumerate(rows):  # each row it cites links to that row of the scorecard table
        if row["label"] in evidence[3]["rows"]:
            assert f'<a href="#row-{i}"><span data-source="scorecard" data-field="/rows/{i}/label"' in art15_5
            assert f'<tr id="row-{i}" data-row="{row["label"]}">' in html
    assert '<a href="#certified-entry">' in art15_5 and 'id="certified-entry"' in html
    assert 'id="detection"' in html and 'id="scorecard"' in html
    # values from metrics.json: the clean accuracy, per-class sensitivity, the files skipped
    art15_3 = page_text(re.search(r'<tr data-requirement="EU AI Act Art. 15\(3\)">.*?</tr>', section, re.S).group(0))
    assert "clean accuracy 78.3% on 60 test images; 78.3% (95% CI 66.4–86.9%) on the 60 attacked" in art15_3
    assert "sensitivity Normal 80.0%, Pneumonia 75.0%, Pneumothorax 80.0%" in art15_3
    art15_4 = page_text(re.search(r'<tr data-requirement="EU AI Act Art. 15\(4\)">.*?</tr>', section, re.S).group(0))
    assert "1 unreadable files skipped, each listed in skipped.txt" in art15_4 and "partly" in art15_4
    assert "not addressed" in page_text(section) and "not_addressed" not in page_text(section)


def test_a_schema_1_scorecard_is_rewritten_with_its_requirements(tmp_path: Path, write_run) -> None:
    """A run whose scorecard.json predates schema 2 (no evidence) still reads; the statement
    rewrites it from metrics.json so that its table is there."""
    write_run(tmp_path, samples=False)
    document = build_scorecard(read_metrics(tmp_path)).model_dump(mode="json")
    old = {**{k: v for k, v in document.items() if k != "evidence"}, "schema_version": 1}
    (tmp_path / SCORECARD_FILE).write_text(json.dumps(old))
    assert read_scorecard(tmp_path).evidence == []  # it reads
    html = build_statement(tmp_path).read_text()
    assert read_scorecard(tmp_path).schema_version == 2 and len(read_scorecard(tmp_path).evidence) == 14
    assert '<section id="requirements">' in html


def test_statement_is_printable_and_self_contained(complete_run) -> None:
    html = (complete_run[0] / STATEMENT_FILE).read_text()
    assert "@page { size: A4;" in html and "break-inside: avoid" in html
    for forbidden in ("<script", "<link", "<input", "<button", "<form", "<select", "<textarea", "@import", "http://",
                      "https://", "<img"):
        assert forbidden not in html, forbidden


def test_statement_of_an_old_run_without_scorecard(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, transfer=False, defenses=False, detectors=False, samples=False, history=False)
    assert not (tmp_path / SCORECARD_FILE).exists()
    path = build_statement(tmp_path)
    assert path == tmp_path / STATEMENT_FILE
    assert read_scorecard(tmp_path) == build_scorecard(read_metrics(tmp_path))
    html = path.read_text()
    assert "No defense was tested" in html and "No detector was tested" in html
    assert "transfer attacker without model access: not tested (no surrogate given)" in html


def test_report_rewrites_a_stale_scorecard(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, samples=False)
    (tmp_path / SCORECARD_FILE).write_text('{"schema_version": 0}')
    build_report(tmp_path)
    assert read_scorecard(tmp_path) == build_scorecard(read_metrics(tmp_path))


def test_undefined_scores_are_said_not_defined(tmp_path: Path, write_run, tagged_page) -> None:
    metrics = write_run(tmp_path, transfer=False, defenses=False, detectors=False, samples=False)
    bare = RunMetrics.model_validate({**metrics.model_dump(), "attacks": [], "eps_sweep": {},
                                      "robustness_score": {"value": None, "definition": "not defined without attacks"}})
    (tmp_path / "metrics.json").write_text(bare.model_dump_json())
    report = build_report(tmp_path).read_text()
    statement = (tmp_path / STATEMENT_FILE).read_text()
    tagged_page(statement, _documents(tmp_path))
    scorecard = read_scorecard(tmp_path)
    assert scorecard.overall is None and scorecard.overall_text.startswith("not defined")
    assert scorecard.overall_text in statement and "No threat model was tested" in statement
    assert '<span class="score-value">not defined</span>' in report


def test_report_opens_with_the_scorecard(complete_run, tagged_page, page_text) -> None:
    run_dir, _, path = complete_run
    html = path.read_text()
    assert html.index('<section id="scorecard">') < html.index('<section id="summary">')
    section = html[html.index('<section id="scorecard">'):html.index('<section id="summary">')]
    scorecard = read_scorecard(run_dir)
    tagged_page(section, _documents(run_dir))
    for row in scorecard.rows:
        assert f'data-row="{row.label}"' in section
    assert scorecard.overall_text in section and "Not tested:" in section
    for definition in scorecard.definitions.values():
        assert definition in page_text(section)


def test_missing_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        build_statement(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): the statement is "
                                              "not printed to PDF here")
def test_statement_prints_to_pdf_in_headless_chromium(complete_run, tmp_path: Path) -> None:
    statement = complete_run[0] / STATEMENT_FILE
    pdf = tmp_path / "statement.pdf"
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                             f"--user-data-dir={tmp_path / 'profile'}", f"--print-to-pdf={pdf}",
                             statement.resolve().as_uri()], capture_output=True, timeout=120)
    assert pdf.is_file(), result.stderr.decode(errors="replace")[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", data))
    assert 1 <= pages <= 3, pages  # 3 on A4 with the requirements traced (Chromium 156, DejaVu Sans)
    # the requirements traced are on the printed pages, each requirement with its status, and the links to
    # the scorecard's rows survive as links inside the PDF
    printed = re.sub(r"\s+", "", " ".join(pdf_pages_text(data)))
    assert "Requirementstraced" in printed and "Itdoesnotdecidecompliance" in printed
    for entry in json.loads((complete_run[0] / SCORECARD_FILE).read_text())["evidence"]:
        assert re.sub(r"\s+", "", entry["requirement"]) in printed, entry["requirement"]
        assert re.sub(r"\s+", "", entry["gaps"][0] if entry["gaps"] else entry["summary"]) in printed
    assert b"/Dest /row-0" in data and b"/Dest /certified-entry" in data


def test_a_titled_run_and_its_model_version_head_the_statement_and_the_report(tmp_path: Path, write_run,
                                                                              tagged_page) -> None:
    """A run given a title and a model version (a service job's name and version, issue 25) is
    named by them, not by its folder's id-bearing name; both are tagged fields of scorecard.json."""
    metrics = write_run(tmp_path, transfer=False, samples=False)
    titled = RunMetrics.model_validate({**metrics.model_dump(), "config": {
        **metrics.config, "title": "Chest triage <site B>", "model_version": "2.1.0"}})
    (tmp_path / "metrics.json").write_text(titled.model_dump_json())
    report = build_report(tmp_path).read_text()
    statement = (tmp_path / STATEMENT_FILE).read_text()
    tagged_page(statement, _documents(tmp_path))
    scorecard = read_scorecard(tmp_path)
    assert scorecard.title == "Chest triage <site B>" and scorecard.model["version"] == "2.1.0"
    assert "<title>Adversarial robustness statement: Chest triage &lt;site B&gt;</title>" in statement
    assert re.search(r'<h1>Adversarial robustness statement: <span [^>]*data-field="/title"[^>]*>Chest triage '
                     r'&lt;site B&gt;</span></h1>', statement), statement[:3000]
    assert re.search(r'version</[a-z]+>\s*<[a-z]+>\s*<span [^>]*data-field="/model/version"[^>]*>2\.1\.0</span>',
                     statement), statement
    assert f"<title>Robustness report: Chest triage &lt;site B&gt; ({metrics.name})</title>" in report
    assert "model version 2.1.0; " in report
    untitled = tmp_path / "untitled"
    write_run(untitled, transfer=False, samples=False)
    build_report(untitled)
    plain = (untitled / STATEMENT_FILE).read_text()
    assert f"<title>Adversarial robustness statement: {metrics.name}</title>" in plain
    assert "<h1>Adversarial robustness statement</h1>" in plain and "/model/version" not in plain
