"""The torch-free catalogue of components (what the service's web process checks a
configuration's specs against) holds exactly the live registries, and checking a spec against it
accepts and refuses what building the spec does, with the same sentence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medrobust.attacks.registry import build_attack
from medrobust.defenses.registry import build_defense
from medrobust.layer.component_catalogue import (
    catalogue,
    catalogue_from_registries,
    check_attack_spec,
    check_defense_spec,
)


def test_the_catalogue_file_holds_the_live_registries() -> None:
    assert catalogue() == catalogue_from_registries(), (
        "component_catalogue.json differs from the registries: regenerate it with "
        "python -m medrobust.layer.component_catalogue")


ATTACKS = [
    ("pgd", {"steps": "20", "eps": "4/255"}, False),
    ("pgd:eps=8/255,steps=20", {"alpha": 1 / 255}, False),
    ("sia", {"n_copies": 5, "ops": "paper"}, False),
    ("square", {"queries": 300, "findings": "Pneumothorax;Pneumonia"}, False),
    ("pgd", {"eps": "80/255"}, True),
    ("fgsm", {"norm": "l2", "eps": 2.0}, False),  # an L2 budget is not bound by the L-inf limit
]
BAD_ATTACKS = [
    ("pgd-typo", {}, False),
    ("pgd", {"stpes": 10}, False),
    ("pgd:steps=ten", {}, False),
    ("pgd", {"random_start": "maybe"}, False),
    ("pgd", {"eps": "80/255"}, False),
    ("sia:n_copies", {}, False),
]


@pytest.mark.parametrize("spec, params, allow", ATTACKS)
def test_an_attack_spec_the_registry_builds_passes_the_check(spec, params, allow) -> None:
    build_attack(spec, allow_large_eps=allow, **params)
    check_attack_spec(spec, allow, **params)


@pytest.mark.parametrize("spec, params, allow", BAD_ATTACKS)
def test_an_attack_spec_the_registry_refuses_is_refused_with_its_sentence(spec, params, allow) -> None:
    with pytest.raises(ValueError) as built:
        build_attack(spec, allow_large_eps=allow, **params)
    with pytest.raises(ValueError) as checked:
        check_attack_spec(spec, allow, **params)
    assert str(checked.value) == str(built.value)


@pytest.mark.parametrize("spec", ["jpeg+tv", "jpeg:quality=50+tv:weight=1/10", "tvm:seed=none", "bits:bits=5",
                                  "median:size=3", "none"])
def test_a_defense_spec_the_registry_builds_passes_the_check(spec) -> None:
    build_defense(spec)
    assert [name for name, _ in check_defense_spec(spec)] == [m.split(":")[0] for m in spec.split("+")]


@pytest.mark.parametrize("spec", ["jpeg+blur", "jpeg:qualty=50", "tv:max_iter=many", "jpeg++tv", "", "  "])
def test_a_defense_spec_the_registry_refuses_is_refused_with_its_sentence(spec) -> None:
    with pytest.raises(ValueError) as built:
        build_defense(spec)
    with pytest.raises(ValueError) as checked:
        check_defense_spec(spec)
    assert str(checked.value) == str(built.value)


def test_checking_specs_does_not_import_torch() -> None:
    code = ("import sys\nfrom medrobust.layer.component_catalogue import check_attack_spec, check_defense_spec\n"
            "check_attack_spec('pgd:steps=5'); check_defense_spec('jpeg+tv')\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
