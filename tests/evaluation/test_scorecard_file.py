"""scorecard.json, schema 2: it round-trips with its ``evidence``, a schema-1 file (no evidence)
still reads, and the published JSON schema (docs/scorecard.schema.json) is the model's own and
validates the file (with jsonschema when installed — it comes with the ``scale`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.evaluation.scorecard import SCHEMA_VERSION, build_scorecard, read_scorecard, write_scorecard
from medrobust.evaluation.scorecard_schema import Scorecard, scorecard_json_schema
from tests.report.conftest import make_metrics

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "scorecard.schema.json"


def schema_1(document: dict) -> dict:
    """What medrobust wrote before schema 2: the same scorecard without ``evidence`` and its definition."""
    old = {k: v for k, v in document.items() if k != "evidence"}
    old["definitions"] = {k: v for k, v in document["definitions"].items() if k != "evidence"}
    return {**old, "schema_version": 1}


def test_schema_2_round_trip(tmp_path: Path) -> None:
    card = build_scorecard(make_metrics())
    write_scorecard(card, tmp_path)
    raw = json.loads((tmp_path / "scorecard.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 2
    assert len(raw["evidence"]) == 14
    assert set(raw["evidence"][0]) == {"requirement", "source", "summary", "rows", "status", "gaps"}
    assert read_scorecard(tmp_path) == card


def test_a_schema_1_file_still_reads(tmp_path: Path) -> None:
    document = build_scorecard(make_metrics()).model_dump(mode="json")
    (tmp_path / "scorecard.json").write_text(json.dumps(schema_1(document)))
    old = read_scorecard(tmp_path)
    assert old.schema_version == 1 and old.evidence == []
    assert old.rows == build_scorecard(make_metrics()).rows


def test_the_published_json_schema_is_the_models() -> None:
    assert json.loads(PUBLISHED.read_text()) == scorecard_json_schema(), (
        "docs/scorecard.schema.json is out of date: python -m medrobust.evaluation.scorecard_schema > "
        "docs/scorecard.schema.json")
    assert scorecard_json_schema()["$defs"]["Evidence"]["properties"]["status"]["enum"] == [
        "addressed", "partly", "not_addressed"]


def validate(document: dict) -> None:
    """``document`` against the published JSON schema (jsonschema), and the pydantic model."""
    Scorecard.model_validate(document)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text())).validate(document)


def test_the_json_schema_validates_scorecards_and_refuses_a_wrong_status() -> None:
    document = build_scorecard(make_metrics()).model_dump(mode="json")
    validate(document)
    validate(schema_1(document))  # an old file is valid too: evidence is optional
    jsonschema = pytest.importorskip("jsonschema")
    wrong = json.loads(json.dumps(document))
    wrong["evidence"][0]["status"] = "compliant"
    with pytest.raises(jsonschema.ValidationError, match="compliant"):
        jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text())).validate(wrong)
