"""Synthetic head CT in Hounsfield units: axial slices and small volumes of three classes.

A head is an ellipsoid: air (-1000 HU) around a skull (an elliptical shell of cortical bone,
700-1500 HU), brain inside (grey matter 36-40 HU at the rim, white matter 28-32 HU within: a
slight contrast, as on a real scan), two lateral ventricles of CSF (5-15 HU), and Gaussian
reconstruction noise of 5-8 HU standard deviation (recorded per volume in the manifest, so a
report can set an HU budget beside it). Classes:

* ``normal``;
* ``haemorrhage``: an intraparenchymal bleed, a hyperdense ellipsoidal blob of 50-90 HU at a
  varied site (left/right, front/back, any height) and size (radius 7-16 % of the half field of view);
* ``infarct``: an acute-to-subacute ischaemic infarct, a hypodense (10-25 HU) wedge of a vascular
  territory: an angular sector of the hemisphere reaching from the cortex inwards, over a few
  slices. It differs from a bleed in sign (darker than brain, not brighter), shape (a cortical
  wedge, not a round blob) and site (touching the cortex).

Everything random about a head is drawn once from a ``numpy.random.Generator`` seeded by
``(seed, index)`` (:func:`ct_head_params`); rendering (:func:`render_ct_head`) is a pure,
vectorised function of those parameters and the grid (no per-voxel Python), rounded to integer
HU: the CT grid's stored values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medrobust.data.stored_grid import CT_HU

CT_CLASSES: tuple[str, ...] = ("normal", "haemorrhage", "infarct")
AIR_HU = -1000.0
FIELD_OF_VIEW_MM = 220.0
"""The in-plane field of view, whatever the matrix: a 64 px slice has 3.44 mm pixels."""
VOLUME_HEIGHT_MM = 80.0
"""The head-foot extent a volume covers: 16 slices of 5 mm."""


@dataclass(frozen=True)
class CTHeadParams:
    """One head and its finding. Lengths are fractions of the half field of view (u, v in-plane,
    -1..1; w along the slices, -1..1 over the volume's extent)."""

    label: int
    semi_u: float  # head half-width
    semi_v: float  # head half-length (front-back)
    semi_w: float  # head half-height, in units of the volume's half extent
    shift_u: float
    shift_v: float
    rotation_deg: float  # in-plane rotation of the head
    skull_thickness: float  # as a fraction of the head's radius
    skull_hu: float
    grey_hu: float
    white_hu: float
    csf_hu: float
    ventricle_size: float
    noise_hu: float  # standard deviation of the reconstruction noise
    noise_seed: int
    slice_w: float  # where a single axial slice is cut (through the finding when there is one)
    lesion_u: float = 0.0  # haemorrhage centre, or the infarct's apex direction
    lesion_v: float = 0.0
    lesion_w: float = 0.0
    lesion_radius: float = 0.0  # haemorrhage radius, or the infarct's half-height in w
    lesion_hu: float = 0.0
    wedge_angle_deg: float = 0.0  # infarct: direction of the territory from the centre
    wedge_half_angle_deg: float = 0.0  # infarct: half the angular extent of the territory
    wedge_depth: float = 0.0  # infarct: how far from the cortex inwards (fraction of the brain radius)

    @property
    def class_name(self) -> str:
        return CT_CLASSES[self.label]

    def to_record(self) -> dict[str, object]:
        """The parameters as one manifest row (the label left to the manifest, which names the class)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "label"}


def sample_ct_head(rng: np.random.Generator, label: int) -> CTHeadParams:
    """A random head of class ``label`` (0 normal, 1 haemorrhage, 2 infarct)."""
    if label not in range(len(CT_CLASSES)):
        raise ValueError(f"label must be 0..{len(CT_CLASSES) - 1} ({', '.join(CT_CLASSES)}), got {label}")
    u = rng.uniform
    head = dict(label=label, semi_u=u(0.62, 0.74), semi_v=u(0.76, 0.88), semi_w=u(1.3, 1.6),
                shift_u=u(-0.05, 0.05), shift_v=u(-0.05, 0.05), rotation_deg=u(-12, 12),
                skull_thickness=u(0.06, 0.10), skull_hu=u(700, 1500), grey_hu=u(36, 40), white_hu=u(28, 32),
                csf_hu=u(5, 15), ventricle_size=u(0.8, 1.3), noise_hu=u(5, 8), noise_seed=int(rng.integers(2**31)),
                slice_w=u(-0.3, 0.3))
    if label == 1:
        angle, reach = u(0, 2 * np.pi), u(0.2, 0.55)
        head.update(lesion_u=reach * np.cos(angle), lesion_v=reach * np.sin(angle), lesion_w=u(-0.5, 0.5),
                    lesion_radius=u(0.07, 0.16), lesion_hu=u(50, 90))
    elif label == 2:
        head.update(wedge_angle_deg=u(0, 360), wedge_half_angle_deg=u(15, 35), wedge_depth=u(0.35, 0.6),
                    lesion_w=u(-0.4, 0.4), lesion_radius=u(0.25, 0.5), lesion_hu=u(10, 25))
    if label:
        head["slice_w"] = head["lesion_w"]
    return CTHeadParams(**head)  # type: ignore[arg-type]


def ct_head_params(seed: int, index: int, label: int) -> CTHeadParams:
    """Head number ``index`` of the dataset seeded ``seed`` (its own generator: any head alone, in any order)."""
    return sample_ct_head(np.random.default_rng([seed, index, 29]), label)


def render_ct_head(params: CTHeadParams, size: int = 64, depth: int = 16, noise: bool = True) -> np.ndarray:
    """The head as integer HU, (depth, size, size) float32 on the CT grid.

    ``depth`` 1 gives one axial slice, cut at ``params.slice_w`` (through the finding); more
    slices span the volume's extent evenly. Noise comes from ``params.noise_seed`` alone
    (``noise=False``: the noiseless head, to measure the noise against).
    """
    if not 16 <= size <= 512 or not 1 <= depth <= 256:
        raise ValueError(f"a CT phantom is 16 to 512 px square and 1 to 256 slices, got {size} px x {depth} slices")
    p = params
    w = np.array([p.slice_w]) if depth == 1 else np.linspace(-1.0, 1.0, depth)
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    ww, vv, uu = np.meshgrid(w, centres, centres, indexing="ij")
    theta = np.deg2rad(p.rotation_deg)
    du, dv = uu - p.shift_u, vv - p.shift_v
    hu_axis, hv_axis = du * np.cos(theta) + dv * np.sin(theta), -du * np.sin(theta) + dv * np.cos(theta)
    radius = np.sqrt((hu_axis / p.semi_u) ** 2 + (hv_axis / p.semi_v) ** 2 + (ww / p.semi_w) ** 2)
    inner = 1.0 - p.skull_thickness
    brain = radius < inner
    image = np.full(radius.shape, AIR_HU)
    image[(radius >= inner) & (radius < 1.0)] = p.skull_hu
    depth_in_brain = radius / inner  # 0 centre .. 1 cortex
    image[brain] = np.where(depth_in_brain[brain] > 0.8, p.grey_hu, np.rint(p.white_hu))
    for side in (-1.0, 1.0):  # the lateral ventricles: two slim ellipsoids beside the midline
        vent = ((hu_axis - side * 0.1) / (0.07 * p.ventricle_size)) ** 2 + (hv_axis / (0.3 * p.ventricle_size)) ** 2 \
            + (ww / 0.5) ** 2
        image[brain & (vent < 1.0)] = p.csf_hu
    if p.label == 1:
        blob = ((hu_axis - p.lesion_u) ** 2 + (hv_axis - p.lesion_v) ** 2) / p.lesion_radius ** 2 \
            + ((ww - p.lesion_w) / (2.5 * p.lesion_radius)) ** 2
        image[brain & (blob < 1.0)] = p.lesion_hu
    elif p.label == 2:
        angle = np.rad2deg(np.arctan2(hv_axis / p.semi_v, hu_axis / p.semi_u))
        off = np.abs((angle - p.wedge_angle_deg + 180.0) % 360.0 - 180.0)
        wedge = (off < p.wedge_half_angle_deg) & (depth_in_brain > 1.0 - p.wedge_depth) \
            & (np.abs(ww - p.lesion_w) < p.lesion_radius)
        image[brain & wedge] = p.lesion_hu
    if noise:
        draw = np.random.default_rng(p.noise_seed).normal(0.0, p.noise_hu, size=(len(w), size, size))
        image = image + np.where(image > AIR_HU, draw, draw * 0.3)  # air is quieter than tissue
    return np.rint(np.clip(image, CT_HU.low, CT_HU.high)).astype(np.float32)


def ct_head_spacing(size: int, depth: int) -> tuple[float, float, float]:
    """(dz, dy, dx) in mm of a rendered head: the field of view over the matrix, the extent over the slices."""
    dxy = FIELD_OF_VIEW_MM / size
    return (VOLUME_HEIGHT_MM / depth if depth > 1 else 5.0), dxy, dxy


def measured_noise(hu: np.ndarray, clean: np.ndarray, white_hu: float) -> float:
    """The HU standard deviation over the voxels the noiseless head (``clean``) holds as white
    matter: the noise of a homogeneous region, as a physicist measures it in a region of interest
    (NaN when the head has fewer than two such voxels)."""
    region = hu[clean == np.rint(white_hu)]
    return float(region.std()) if region.size > 1 else float("nan")
