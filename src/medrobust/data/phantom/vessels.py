"""Pulmonary vessel markings: branching trees from each hilum, thinning and fading to the
periphery, generated level by level with vectorised numpy (no per-segment Python)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 6
THICK_LEVELS = 2  # levels 0..1 are the large central vessels, rendered with a wider profile


@dataclass(frozen=True)
class VesselPoints:
    """Points sampled densely along every vessel segment, in anatomical coordinates."""

    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray  # contrast x width per unit length (integrated attenuation)
    thick: np.ndarray  # bool: belongs to a large central vessel


def vessel_tree(
    rng: np.random.Generator,
    hilum: tuple[float, float],
    lateral_sign: float,
    reach: float,
    spacing: float,
) -> VesselPoints:
    """Grow one lung's vessel tree from ``hilum``.

    Four trunks fan out (towards the apex, upper-lateral, lower-lateral and the base); every
    segment splits in two at each level with a random angle, 12% of branches end early.
    Lengths shrink by ~0.75 per level, widths by ~0.7 and contrast by ~0.8, so markings fade
    towards the periphery as on a real film. ``reach`` scales the lengths to the lung size;
    ``spacing`` is the distance between sampled points (about a pixel or less).
    """
    base_angles = np.array([-1.35, -0.55, 0.35, 1.05]) + rng.normal(0.0, 0.12, 4)
    angles = base_angles
    starts = np.tile(np.array(hilum, dtype=np.float64), (len(angles), 1))
    starts += rng.normal(0.0, 0.012, starts.shape)
    us, vs, ws, thick = [], [], [], []
    length = 0.2 * reach
    width = 0.022
    contrast = 1.0
    for level in range(LEVELS):
        n = len(angles)
        seg_len = length * rng.uniform(0.75, 1.25, n)
        ends = starts + np.stack([np.cos(angles) * lateral_sign, np.sin(angles)], axis=1) * seg_len[:, None]
        steps = max(2, int(np.ceil(seg_len.max() / spacing)))
        t = np.linspace(0.0, 1.0, steps, endpoint=False)
        pts = starts[:, None, :] + t[None, :, None] * (ends - starts)[:, None, :]
        # segments shorter than the longest get their surplus points dropped via weight 0
        keep = t[None, :] * seg_len[:, None].max() <= seg_len[:, None] + 1e-9
        density = np.where(keep, 1.0, 0.0) * (seg_len.max() / steps)
        us.append(pts[..., 0].ravel())
        vs.append(pts[..., 1].ravel())
        ws.append((density * width * contrast).ravel())
        thick.append(np.full(pts.shape[0] * pts.shape[1], level < THICK_LEVELS))
        alive = rng.random(n) > (0.0 if level == 0 else 0.12)
        spread = rng.uniform(0.25, 0.55, n)
        angles = np.concatenate([angles[alive] - spread[alive], angles[alive] + spread[alive] * rng.uniform(0.6, 1.1)])
        angles = angles + rng.normal(0.0, 0.08, len(angles))
        starts = np.concatenate([ends[alive], ends[alive]])
        length *= 0.75
        width *= 0.7
        contrast *= 0.8
    return VesselPoints(
        u=np.concatenate(us),
        v=np.concatenate(vs),
        weight=np.concatenate(ws),
        thick=np.concatenate(thick),
    )
