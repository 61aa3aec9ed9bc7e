"""Which configuration fields name a file on the machine that runs the configuration, and which
text fields do not: one list beside the schema, so whoever adds a field decides here."""

from __future__ import annotations

PATH_FIELDS: dict[str, frozenset[str]] = {
    "output_dir": frozenset(),
    "data.source": frozenset({"phantom"}),
    "model.load.path": frozenset(),
    "model.train.weights": frozenset({"none", "imagenet"}),
    "model.train.data": frozenset(),
    "surrogates[].load.path": frozenset(),
    "surrogates[].train.weights": frozenset({"none", "imagenet"}),
    "surrogates[].train.data": frozenset(),
    "detectors.squeeze.calibration": frozenset(),
}
"""Every field whose value names a file or folder on the machine that runs the configuration
(``[]``: each item of a list), with the values that name none (``weights: imagenet`` is the
local torch hub cache, ``source: phantom`` the generator). The service refuses each of them in
a tenant's configuration (:mod:`medrobust.service.job_config`): on a server a path is the
server's file, and opening it would let a tenant read, or learn of, files that are not theirs.
It lives here, beside the schema, so that whoever adds a field decides here whether it is a
path; ``tests/service/test_config_paths.py`` walks the schema and fails on any text field
listed neither here nor in :data:`TEXT_FIELDS_NOT_PATHS`."""

TEXT_FIELDS_NOT_PATHS: frozenset[str] = frozenset({
    "name",  # the run's folder name: one component, checked by RUN_NAME
    "title", "model_version",  # words for the report's title
    "device",
    "data.classes", "data.class_map", "data.normal_class", "data.emergency_findings",  # class names
    *(f"{m}.{f}" for m in ("model", "surrogates[]") for f in (
        "train.arch", "train.trainable", "train.adversarial", "train.intensity",  # a zoo name, a layer policy,
        # an attack spec, an intensity convention
        "load.arch", "load.classes", "load.intensity", "load.output_kind")),  # the contract's names
    "surrogates[].name",
    "attacks[].name", "attacks[].params", "defenses[]",  # component specs: the registries read no file
    "adaptive.attack", "adaptive.params", "adaptive.portfolio",
    "detectors.squeeze.squeezers",
    "guard.defense", "guard.detectors",  # a defense spec of the run's, detector names
    "execution.address",  # a Ray address, not a file (the service refuses execution: whole)
    "left_out",  # sentences for the scorecard's not-tested lines
})
"""Every other field that can hold text, each declared not to name a file (see :data:`PATH_FIELDS`)."""
