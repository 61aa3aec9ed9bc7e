"""The largest attack budget built without asking, and its check, without torch: the attack
registry (:func:`medrobust.attacks.registry.build_attack`) and the service's web process, which
checks a configuration's attack specs before queueing a job, refuse the same budgets with the
same sentence."""

from __future__ import annotations

MAX_EPS = 64 / 255
"""The largest L-inf budget built without ``allow_large_eps``: beyond it the "attack" is a
visibly different image (at 300/255 the SSIM to the original was 0.04), not a perturbation."""

VISIBLE_EPS = 16 / 255
"""L-inf budgets above this are marked "visible" in reports (a radiologist may see the noise)."""


def check_eps_limit(name: str, eps: float | None, norm: str | None, allow_large_eps: bool) -> None:
    """ValueError when attack ``name``'s L-inf budget ``eps`` is above :data:`MAX_EPS` and
    ``allow_large_eps`` is not set."""
    if eps is not None and (norm or "linf") == "linf" and eps > MAX_EPS + 1e-9 and not allow_large_eps:
        raise ValueError(
            f"attack {name}: eps {eps * 255:.4g}/255 is above the {round(MAX_EPS * 255)}/255 limit: such an image is "
            "visibly another image, not an adversarial perturbation; use a smaller eps (e.g. 8/255), or set "
            "allow_large_eps: true (--allow-large-eps) if that is really meant"
        )
