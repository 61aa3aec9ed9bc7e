"""Render a synthetic frontal (PA) chest radiograph from :class:`PhantomParams`.

The picture is built the way a radiograph is formed: an attenuation map ``A`` (soft-tissue
envelope, mediastinum and heart, diaphragm and abdomen, ribs, clavicles, spine, the air of
the lungs with their vessel markings, and the findings) is turned into film density with
``E = 1 - exp(-k A)``, blurred by the detector, windowed, gamma-corrected, and given
quantum noise. Bright means dense (bone, fluid), dark means air.

Findings act on the physics, not on the pixels:

* pneumonia (consolidation) replaces alveolar air by fluid: the lung's air fraction falls
  inside ragged, patchy or lobar (fissure-bounded) regions, hiding the vessels there;
* pneumothorax lets the lung collapse away from the chest wall: between the wall and the
  displaced lung edge lies a hyperlucent rim with no vessel markings, bounded by the thin
  bright visceral pleural line.

All geometry is in normalised anatomical coordinates (see :mod:`.params`), so one set of
parameters renders consistently at any size from 32 to 512 px.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medrobust.data.phantom.fields import (
    pixel_grid,
    segment_distance,
    smooth_noise,
    soft_inside,
    splat,
    thin_line,
)
from medrobust.data.phantom.params import Consolidation, PhantomParams, Pneumothorax
from medrobust.data.phantom.vessels import vessel_tree

MIN_SIZE = 32
MAX_SIZE = 512

LUNG_AIR = 0.72  # fraction of the soft-tissue attenuation removed by aerated lung
PTX_AIR = 0.9  # in the pneumothorax space there is no lung tissue at all
SIDE_SIGN = {"right": -1.0, "left": 1.0}  # patient's right lung lies on the image's left


class _Geometry:
    """Where the organs of this patient are, in anatomical coordinates."""

    def __init__(self, params: PhantomParams) -> None:
        p = params.patient
        insp = p.inspiration
        self.lung_cv = -0.07 + 0.03 * insp
        self.lung_av = 0.5 + 0.07 * insp
        self.lung_au = 0.31
        self.lung_cu = 0.42
        self.dome_base = {"right": 0.36 + 0.13 * insp, "left": 0.40 + 0.13 * insp}
        self.dome_height = 0.13 - 0.05 * insp
        self.heart = (0.08, 0.2 + 0.1 * insp, 0.27 * p.heart_size, 0.21 * p.heart_size)
        self.hilum = {"right": (-0.15, -0.03 + 0.02 * insp), "left": (0.16, -0.06 + 0.02 * insp)}
        self.rib_spacing = 0.1 * (0.92 + 0.16 * insp)

    def lung_top(self) -> float:
        return self.lung_cv - self.lung_av

    def lung_signed_distance(self, u: np.ndarray, v: np.ndarray, side: str) -> np.ndarray:
        """Approximate signed distance to one lung's outline (positive inside), before the
        mediastinum and heart are cut out: a tapered ellipse (narrow apex, wide base) cut
        from below by the diaphragm dome."""
        s = SIDE_SIGN[side]
        cu = s * self.lung_cu
        top = self.lung_top()
        taper = 0.6 + 0.4 * np.clip((v - top) * (1.0 / (1.3 * self.lung_av)), 0.0, 1.0)
        au = self.lung_au * taper
        x = (u - cu) / au
        y = (v - self.lung_cv) * (1.0 / self.lung_av)
        rho = np.sqrt(x * x + y * y)
        sd_shape = (1.0 - rho) * np.minimum(au, self.lung_av)
        w = (u - cu) * (1.0 / (1.1 * self.lung_au))
        dome = self.dome_base[side] - self.dome_height * (1.0 - np.minimum(w * w, 1.0))
        return np.minimum(sd_shape, dome - v)


def render_phantom(params: PhantomParams, size: int = 128) -> np.ndarray:
    """Render ``params`` as a (size, size) float32 radiograph in [0, 1]."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"phantom size must be {MIN_SIZE}..{MAX_SIZE} px, got {size}")
    p = params.patient
    g = _Geometry(params)
    pixel = 2.0 / size  # one pixel in normalised units (before patient scaling)
    edge = max(0.012, 0.7 * pixel)
    u, v = _anatomical_grid(params, size)
    tex_rng = np.random.default_rng(p.texture_seed)

    # --- soft-tissue envelope: thickness of an elliptic cylinder, narrowing to the neck
    half_width = 0.9 + 0.06 * soft_inside(v + 0.85, 0.1) * soft_inside(-0.45 - v, 0.1) - 1.0 * np.clip(-0.85 - v, 0.0, None)
    body = soft_inside(half_width - np.abs(u), edge)
    thickness = 0.62 * np.sqrt(np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0)) * body * p.soft_tissue

    # --- mediastinum, heart, aortic knob (soft tissue in front of the lungs)
    hu, hv, ha, hb = g.heart
    ca, sa = np.cos(-0.35), np.sin(-0.35)
    hx = ((u - hu) * ca + (v - hv) * sa) / ha
    hy = (-(u - hu) * sa + (v - hv) * ca) / hb
    heart = soft_inside((1.0 - np.sqrt(hx * hx + hy * hy)) * hb, edge)
    med_half = 0.12 + 0.03 * np.clip(v + 0.5, 0.0, 1.0)
    mediastinum = soft_inside(med_half - np.abs(u - 0.01), edge) * soft_inside(hv - v, 0.05)
    knob = soft_inside(0.065 - np.hypot(u - 0.1, v + 0.24), edge)
    central = np.maximum(np.maximum(heart, mediastinum), knob)
    trachea = soft_inside(0.028 - np.abs(u + 0.005 + 0.02 * (v + 0.3)), edge) * soft_inside(-0.22 - v, 0.03)

    # --- lungs (air), vessel markings and parenchymal texture
    lung_sd = {side: g.lung_signed_distance(u, v, side) for side in SIDE_SIGN}
    lung = {side: soft_inside(sd, edge) * (1.0 - central) for side, sd in lung_sd.items()}
    marked = dict(lung)  # where lung tissue (and so vessel markings) is present
    air = {side: LUNG_AIR * m for side, m in lung.items()}
    extra = np.zeros_like(u)  # extra attenuation (pleural line, skin fold)

    if params.pneumothorax is not None:
        _apply_pneumothorax(params.pneumothorax, g, u, v, lung_sd, lung, marked, air, extra, central, edge, pixel)

    vessels = _vessel_map(params, g, size)
    parenchyma = smooth_noise(tex_rng, size, max(8, size // 6))
    lung_tissue = sum(marked.values())
    total_air = sum(air.values())

    if params.consolidations:
        fluid = _consolidation_map(params.consolidations, g, u, v, tex_rng, size)
        total_air = total_air * (1.0 - fluid)
        vessels = vessels * (1.0 - 0.8 * fluid)

    # --- bones
    bones = _ribs(u, v, g, edge) + _clavicles(u, v, edge) + _spine(u, v, g, edge)
    bones = bones * body

    # --- abdomen below the domes, with the gastric air bubble under the left dome
    bubble = soft_inside(1.0 - np.hypot((u - 0.3) / 0.075, (v - g.dome_base["left"] - 0.09) / 0.045), 0.25)
    bubble = bubble * (0.3 + 0.5 * p.inspiration)

    if p.skin_fold:
        extra += _skin_fold(u, v, p.skin_fold_side, edge)

    attenuation = (
        thickness * (1.0 - total_air - 0.35 * bubble * body - 0.3 * trachea)
        + 0.06 * central * body
        + lung_tissue * (0.16 * vessels + 0.03 * parenchyma)
        + 0.075 * bones
        + extra
    )

    # --- image formation: exposure, detector blur, heel effect, window, gamma, noise
    density = 1.0 - np.exp(-p.exposure * attenuation)
    sigma = max(0.3, p.blur * size / 128.0)
    density = gaussian_filter(density, sigma, mode="nearest", truncate=3.0)
    x, y = pixel_grid(size)
    density = density * (1.0 + p.heel * (np.cos(p.heel_angle) * x + np.sin(p.heel_angle) * y))
    image = np.clip((density - p.window_low) * (1.0 / (p.window_high - p.window_low)), 0.0, 1.0)
    image = image**p.gamma
    noise_rng = np.random.default_rng(p.texture_seed + 1)
    image = image + p.noise * (0.4 + 0.6 * image) * noise_rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _anatomical_grid(params: PhantomParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres mapped into the patient's anatomical frame (undo shift, rotation, scale, habitus)."""
    p = params.patient
    x, y = pixel_grid(size)
    theta = np.deg2rad(p.rotation_deg)
    c, s = np.cos(theta) / p.scale, np.sin(theta) / p.scale
    xs = x - p.shift_u
    ys = y - p.shift_v
    u = (c * xs + s * ys) * (1.0 / p.habitus)
    v = -s * xs + c * ys
    return u.astype(np.float32), v.astype(np.float32)


def _to_pixels(params: PhantomParams, size: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anatomical points to (column, row) pixel coordinates: the inverse of :func:`_anatomical_grid`."""
    p = params.patient
    theta = np.deg2rad(p.rotation_deg)
    c, s = np.cos(theta) * p.scale, np.sin(theta) * p.scale
    uu = u * p.habitus
    x = c * uu - s * v + p.shift_u
    y = s * uu + c * v + p.shift_v
    return (x + 1.0) * 0.5 * size - 0.5, (y + 1.0) * 0.5 * size - 0.5


def _vessel_map(params: PhantomParams, g: _Geometry, size: int) -> np.ndarray:
    """Attenuation of the vessel markings of both lungs, (size, size)."""
    rng = np.random.default_rng(params.patient.vessel_seed)
    pixel = 2.0 / size / params.patient.scale
    spacing = min(0.004, 0.7 * pixel)
    out = np.zeros((size, size), dtype=np.float32)
    reach = 1.0 + 0.1 * params.patient.inspiration
    pts = [vessel_tree(rng, g.hilum[side], SIDE_SIGN[side], reach, spacing) for side in SIDE_SIGN]
    u = np.concatenate([q.u for q in pts])
    v = np.concatenate([q.v for q in pts])
    w = np.concatenate([q.weight for q in pts]) / (pixel * pixel)
    thick = np.concatenate([q.thick for q in pts])
    col, row = _to_pixels(params, size, u, v)
    for mask, width in ((thick, 0.02), (~thick, 0.006)):
        deposit = splat(size, col[mask], row[mask], w[mask])
        sigma_px = max(0.5, 0.5 * width / pixel)
        out += gaussian_filter(deposit, sigma_px, mode="constant", truncate=3.0)
    return out


def _consolidation_map(
    foci: tuple[Consolidation, ...],
    g: _Geometry,
    u: np.ndarray,
    v: np.ndarray,
    rng: np.random.Generator,
    size: int,
) -> np.ndarray:
    """Fraction of alveolar air replaced by fluid, (size, size) in [0, 1]."""
    fluid = np.zeros_like(u)
    top = g.lung_top()
    for c in foci:
        s = SIDE_SIGN[c.side]
        bottom = g.dome_base[c.side] - g.dome_height * 0.8
        zone_index = ("upper", "middle", "lower").index(c.zone)
        zone_h = (bottom - top) / 3.0
        cv = top + zone_h * (zone_index + c.center_v)
        cu = s * (g.lung_cu + c.center_u * g.lung_au * 0.7)
        ca, sa = np.cos(c.angle), np.sin(c.angle)
        dx, dy = u - cu, v - cv
        px = (dx * ca + dy * sa) / c.radius
        py = (-dx * sa + dy * ca) / (c.radius * c.elongation)
        ragged = smooth_noise(rng, size, 10) - 0.5
        margin = 1.0 - np.sqrt(px * px + py * py) + 2.0 * c.irregularity * ragged
        blob = soft_inside(margin, 0.12 if c.lobar else 0.3)
        if c.lobar:
            # a lobar consolidation stops at the fissure: a straight edge across the lung
            fissure = top + zone_h * zone_index if zone_index > 0 else top + zone_h
            blob = blob * (soft_inside(v - fissure, 0.01) if zone_index > 0 else soft_inside(fissure - v, 0.01))
        texture = 0.7 + 0.3 * smooth_noise(rng, size, max(6, size // 10))
        fluid = np.maximum(fluid, c.density * blob * texture)
    return np.clip(fluid, 0.0, 1.0)


def _apply_pneumothorax(
    ptx: Pneumothorax,
    g: _Geometry,
    u: np.ndarray,
    v: np.ndarray,
    lung_sd: dict[str, np.ndarray],
    lung: dict[str, np.ndarray],
    marked: dict[str, np.ndarray],
    air: dict[str, np.ndarray],
    extra: np.ndarray,
    central: np.ndarray,
    edge: float,
    pixel: float,
) -> None:
    """Collapse one lung towards an anchor (base for apical, hilum for lateral pneumothorax).

    The collapsed lung is the same outline evaluated in coordinates expanded about the
    anchor. Between it and the chest wall: no lung tissue (no markings), more air
    (hyperlucent). At its edge: the visceral pleural line, drawn only where there is air on
    both sides of it.
    """
    side = ptx.side
    s = SIDE_SIGN[side]
    f = ptx.fraction
    if ptx.kind == "apical":
        anchor = (s * (g.lung_cu - 0.25 * g.lung_au), g.dome_base[side])
        scale_u, scale_v = 1.0 - 0.55 * f, 1.0 - f
    else:
        anchor = (s * (g.lung_cu - 0.95 * g.lung_au), g.lung_cv + 0.25 * g.lung_av)
        scale_u, scale_v = 1.0 - f, 1.0 - 0.45 * f
    uc = anchor[0] + (u - anchor[0]) * (1.0 / scale_u)
    vc = anchor[1] + (v - anchor[1]) * (1.0 / scale_v)
    sd_collapsed = g.lung_signed_distance(uc, vc, side) * min(scale_u, scale_v)
    collapsed = soft_inside(sd_collapsed, edge) * (1.0 - central)
    gap = np.clip(lung[side] - collapsed, 0.0, 1.0)
    marked[side] = collapsed
    air[side] = LUNG_AIR * (1.0 + 0.08 * f) * collapsed + PTX_AIR * gap
    line = thin_line(sd_collapsed, 0.006, pixel) * soft_inside(lung_sd[side] - 0.015, edge) * (1.0 - central)
    extra += 0.5 * line


def _ribs(u: np.ndarray, v: np.ndarray, g: _Geometry, edge: float) -> np.ndarray:
    """Posterior ribs (arched, brighter cortex) and fainter anterior ribs, all ribs at once:
    the rib index is the integer part of a curved 'phase' coordinate, the position within
    the rib its fractional part."""
    d = np.abs(u)
    lateral = soft_inside(d - 0.05, 0.02) * soft_inside(0.86 - d, 0.04)
    sp = g.rib_spacing
    first = g.lung_top() - 0.12
    phase = (v - 1.1 * (d - 0.28) ** 2 - first) * (1.0 / sp)
    index = np.floor(phase)
    offset = (phase - index - 0.5) * sp
    valid = (index >= 0) & (index < 10)
    half = 0.017
    shaft = soft_inside(half - np.abs(offset), 0.5 * edge)
    cortex = np.exp(-0.5 * ((np.abs(offset) - half) * (1.0 / max(0.006, edge))) ** 2)
    posterior = (0.7 * shaft + 0.5 * cortex) * valid
    sp_a = 0.12
    phase_a = (v + 0.5 * (d - 0.85) - first - 0.1) * (1.0 / sp_a)
    index_a = np.floor(phase_a)
    offset_a = (phase_a - index_a - 0.5) * sp_a
    valid_a = (index_a >= 0) & (index_a < 6) & (d > 0.2)
    anterior = 0.3 * soft_inside(0.018 - np.abs(offset_a), 0.5 * edge) * valid_a
    return ((posterior + anterior) * lateral).astype(np.float32)


def _clavicles(u: np.ndarray, v: np.ndarray, edge: float) -> np.ndarray:
    out = np.zeros_like(u)
    for s in (-1.0, 1.0):
        dist = segment_distance(u, v, s * 0.07, -0.7, s * 0.58, -0.83)
        out = np.maximum(out, soft_inside(0.028 - dist, edge))
    return 1.8 * out


def _spine(u: np.ndarray, v: np.ndarray, g: _Geometry, edge: float) -> np.ndarray:
    column = soft_inside(0.06 - np.abs(u - 0.005), edge)
    period = 0.95 * g.rib_spacing
    discs = 0.75 + 0.25 * np.cos(2 * np.pi * v / period)
    return 0.35 * column * discs


def _skin_fold(u: np.ndarray, v: np.ndarray, side: str, edge: float) -> np.ndarray:
    """A skin fold: a long, slightly curved density edge over the lateral lung. It mimics a
    pleural edge, but the vessel markings continue past it (the sign that tells them apart)."""
    s = SIDE_SIGN[side]
    x = s * u - (0.55 + 0.08 * (v + 0.1) ** 2)
    return 0.05 * soft_inside(-x, edge) * soft_inside(0.5 - np.abs(v + 0.05), 0.05)
