"""A finished job's guard as the platform gives it: the definition of
:func:`~medrobust.layer.guard_definition.guard_definition` (read from the run folder, no model
loaded), and as ``guard.yaml``, with a header that says where and how to serve it."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import HTTPException

from medrobust.layer.guard_definition import DefenseNotEvaluated, GuardDefinition, guard_definition
from medrobust.service.job_files import JobFiles


def job_guard_definition(files: JobFiles, defense: str | None) -> GuardDefinition:
    """The finished job's guard definition, read from its run folder (no model is loaded); 409 when
    its run has nothing to guard, 422 for a defense it did not evaluate. Errors name the run, not
    its folder on the server.

    Args:
        files: the job's files (its run finished).
        defense: one of the run's defenses, or None for its first.

    Returns:
        The :class:`~medrobust.layer.guard_definition.GuardDefinition`.

    Raises:
        HTTPException: 409 or 422, with the reason.
    """
    folder = files.run.resolve()
    try:
        return guard_definition(folder, defense)
    except DefenseNotEvaluated as err:
        status, message = 422, str(err)
    except (ValueError, FileNotFoundError) as err:
        status, message = 409, str(err)
    raise HTTPException(status, f"job {files.job_id}: " + message.replace(f"{folder}: ", f"run {files.run_name}: ", 1))


def guard_yaml(definition: GuardDefinition, job_id: str) -> str:
    """``guard.yaml``: a comment header (the job, the command, where it must run, what a
    cross-fitted threshold needs), then the definition as ``yaml.safe_dump`` writes it, so that
    ``yaml.safe_load`` reads back exactly :meth:`GuardDefinition.to_dict`.

    Args:
        definition: the job's guard definition.
        job_id: the job's id.

    Returns:
        The file's text.
    """
    header = [f"medrobust guard of job {job_id} (run {definition.run_name}), as the run evaluated it.",
              "Serve it with this command on the machine that holds the run folder (this service's host): the guard",
              "reads the model and the run's files there.",
              f"  {definition.command}"]
    if definition.needs_calibration:
        header.append("The run cross-fitted its squeeze threshold (one per fold, none to serve): DIR is a folder of "
                      "clean images like the ones the guard will see, to calibrate it on.")
    header.append(f"Evaluated: {definition.summary}")
    body: dict[str, Any] = definition.to_dict()
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)
    return "".join("# " + line.replace("\n", " ").replace("\r", " ") + "\n" for line in header) + text
