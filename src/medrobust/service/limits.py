"""What the service accepts from an upload and from a tenant: every cap in one place.

The defaults fit a radiology vendor's evaluation set (a few thousand DICOM or PNG files, a
model up to a large ViT) on a single machine; ``medrobust serve`` options override them
(``--max-model-mb``, ``--max-images-mb``, ...). Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MiB = 2**20
GiB = 2**30

WORK_CEILINGS: dict[str, int] = {
    "steps": 1000,
    "restarts": 10,
    "eot_samples": 200,
    "queries": 20_000,
    "n_copies": 100,
    "max_iter": 2000,
    "epochs": 200,
}
"""Highest value a tenant's configuration may give each parameter that multiplies a job's work:
gradient steps (an attack's ``steps``, ``adaptive.params.steps`` and ``adaptive.max_steps``),
random ``restarts``, EOT draws (``adaptive.eot_samples`` and ``max_eot_samples``), Square
``queries`` (and ``adaptive.square_queries``), SIA's transformed copies ``n_copies``, a TV
defense's ``max_iter`` and a surrogate's training ``epochs``. Each is 5 to 25 times what the
``thorough`` preset uses; ``medrobust serve --ceiling steps=5000`` raises one."""


@dataclass(frozen=True)
class ServiceLimits:
    """Caps on uploads (enforced while the bytes stream in, and on archive members before
    anything is extracted) and on what one tenant may hold."""

    max_model_bytes: int = 2 * GiB
    """Largest model file uploaded (DenseNet121 is 30 MB, a large ViT 1.2 GB)."""
    max_images_bytes: int = 4 * GiB
    """Largest images archive uploaded (compressed)."""
    max_request_bytes: int = 6 * GiB + 1 * MiB
    """Largest whole request (both files and the form fields)."""
    max_field_bytes: int = 256 * 1024
    """Largest text field (a YAML configuration is a few kB)."""
    max_fields: int = 32
    """Most parts in one request."""
    max_archive_members: int = 200_000
    """Most members in an images archive (the NIH set is 112,120 images)."""
    max_images: int = 20_000
    """Most images one job tests, counted on the archive's listing before anything is extracted:
    the work of a job grows with its images, not with its upload's size (100,000 empty PNG files
    zip into 11 MB), and a robustness evaluation is sound on a few thousand."""
    max_expanded_bytes: int = 16 * GiB
    """Largest total uncompressed size of an images archive."""
    max_ratio: float = 200.0
    """Highest compression ratio (expanded / compressed) accepted above :attr:`ratio_checked_above_bytes`;
    PNG, JPEG and compressed DICOM shrink by under 2x in an archive, raw DICOM by 2-5x."""
    ratio_checked_above_bytes: int = 64 * MiB
    """Expanded size below which the ratio is not checked (a small archive cannot cost much)."""
    upload_idle_timeout_s: float = 30.0
    """Seconds an upload may send no bytes before its body is complete; then it is answered 400
    and its partial files are removed (a client that stops sending would otherwise hold them)."""
    max_active_jobs: int = 2
    """Most queued plus running jobs of one tenant."""
    max_stored_bytes: int = 50 * GiB
    """Most bytes one tenant's jobs may hold on disk (uploads and run folders)."""
    max_job_seconds: float = 2 * 3600.0
    """Compute time (a worker's wall-clock time on it, over all its attempts) after which a job
    is stopped and fails, its finished stages kept; a tenant's own limit
    (``medrobust tenants limit``) replaces it."""
    max_attempts: int = 3
    """Workers that may take a job: one whose work was killed (its worker or its process died)
    is retried until this many have taken it, then fails with the last error."""
    ceilings: Mapping[str, int] = field(default_factory=lambda: dict(WORK_CEILINGS))
    """Highest values of the work parameters in a tenant's configuration (:data:`WORK_CEILINGS`)."""
