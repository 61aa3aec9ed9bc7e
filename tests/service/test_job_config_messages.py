"""A tenant's configuration that fails the schema is refused in one line, each setting named by its
place in the file, with no pydantic error codes or links (the same report as the command line's)."""

from __future__ import annotations

import pytest

from medrobust.service.job_config import ConfigRefused, check_job_config, parse_job_config
from medrobust.service.limits import ServiceLimits

CONTRACT = {"classes": ["Normal", "Pneumonia"], "intensity": "unit"}


def _refusal(text: str) -> str:
    with pytest.raises(ConfigRefused) as info:
        check_job_config(parse_job_config(text), "/srv/jobs/1/upload/model.pt", "/srv/jobs/1/upload/images", CONTRACT,
                         ServiceLimits().ceilings)
    return str(info.value)


def test_schema_errors_are_one_line_per_setting():
    message = _refusal("seed: 1208925819614629174706176\nbatch_size: 0\nattacks: [{name: pgd, params: {eps: .nan}}]\n")
    assert message == (  # one line: an API answer's detail is one line (each setting named, "; " between them)
        "config: invalid configuration (3 settings): "
        "seed: 1208925819614629174706176 is not a seed: give a whole number from 0 to 4,294,967,295 (2**32 - 1); "
        "batch_size: input should be greater than or equal to 1; "  # no value echoed: the service filled some
        "attacks[0].params: eps is nan, not a finite number; write e.g. 8/255 or 0.03")
    assert "https://" not in message and "[type=" not in message


def test_one_bad_setting_is_one_line():
    assert _refusal("attacks: [{name: pgd, steps_typo: 3}]\n") == (
        "config: invalid configuration: attacks[0].steps_typo: is not a setting here; remove it or check its spelling")
