"""Defenses by name: specs, typed parameters, composition."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses.base import Defense
from medrobust.defenses.compose import Compose
from medrobust.defenses.identity import Identity
from medrobust.defenses.jpeg import JPEG, jpeg
from medrobust.defenses.registry import build_defense, defense_parameters, list_defenses, parse_defense_spec
from medrobust.defenses.squeezers import BitDepth, MedianFilter
from medrobust.defenses.total_variation import TotalVariation, tv_denoise
from medrobust.defenses.tvm import RandomizedTVM


def test_all_builtin_defenses_are_listed() -> None:
    assert list_defenses() == ["bits", "jpeg", "median", "none", "tv", "tvm"]
    assert list_defenses("t*") == ["tv", "tvm"]


def test_spec_parsing() -> None:
    assert parse_defense_spec("jpeg:quality=50+tv:weight=1e+3,max_iter=5") == [
        ("jpeg", {"quality": "50"}), ("tv", {"weight": "1e+3", "max_iter": "5"})]


def test_composition_builds_the_right_chain_with_typed_parameters() -> None:
    defense = build_defense("jpeg:quality=50+tv:weight=1/10,max_iter=50")
    assert isinstance(defense, Compose) and defense.name == "jpeg+tv"
    assert [type(d) for d in defense] == [JPEG, TotalVariation]
    assert defense[0].quality == 50 and isinstance(defense[0].quality, int)
    assert defense[1].weight == pytest.approx(0.1) and defense[1].max_iter == 50
    assert not defense.randomized and not defense.differentiable


def test_the_study_hybrid_equals_tv_of_jpeg(phantoms) -> None:
    defense = build_defense("jpeg+tv")
    assert defense[0].quality == 75 and defense[1].weight == 0.1
    assert torch.equal(defense(phantoms), tv_denoise(jpeg(phantoms, 75), 0.1))


def test_flags_of_a_composition() -> None:
    assert build_defense("median+tvm").randomized
    assert not build_defense("median+bits").differentiable
    assert build_defense("median+none").differentiable


def test_single_member_is_returned_bare_and_keywords_apply() -> None:
    assert isinstance(build_defense("bits"), BitDepth)
    assert build_defense("median", size=3).size == 3
    assert isinstance(build_defense("none"), Identity)
    existing = MedianFilter(3)
    assert build_defense(existing) is existing


def test_spec_round_trips(phantoms) -> None:
    defense = build_defense("jpeg:quality=60+tvm:drop_prob=0.3,seed=5+bits:bits=4")
    again = build_defense(defense.spec())
    assert again.spec() == defense.spec()
    assert torch.equal(again(phantoms), build_defense(defense.spec())(phantoms))


def test_compose_seeds_its_randomized_members(phantoms) -> None:
    defense = build_defense("tvm+median+tvm")
    defense.manual_seed(3)
    assert defense[0].seed == 3 and defense[2].seed == 5
    first = defense(phantoms)
    defense.manual_seed(3)
    assert torch.equal(defense(phantoms), first)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gaussian", "unknown defense 'gaussian'"),
        ("jpeg:q=50", r"unknown parameter\(s\) \['q'\]"),
        ("jpeg:quality=high", "quality='high' is not a valid int"),
        ("tv:weight", "must look like key=value"),
        ("jpeg+", "empty member"),
        ("", "non-empty string"),
    ],
)
def test_bad_specs_are_explained(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_defense(spec)


def test_keywords_are_refused_for_a_composition() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        build_defense("jpeg+tv", quality=50)


def test_parameters_are_typed() -> None:
    params = defense_parameters("tvm")
    assert params["drop_prob"] == (float, 0.5) and params["seed"][1] == 0
    assert defense_parameters("none") == {}


def test_every_defense_describes_itself() -> None:
    for name in list_defenses():
        defense = build_defense(name)
        assert isinstance(defense, Defense)
        record = defense.describe()
        assert record["name"] == name and "randomized" in record and "differentiable" in record
    assert RandomizedTVM().describe()["seed"] == 0
