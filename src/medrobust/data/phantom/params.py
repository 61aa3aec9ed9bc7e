"""Random parameters of one synthetic chest radiograph: the patient, and the finding if any.

Everything random about a phantom is drawn here, once, from a ``numpy.random.Generator``;
rendering (:mod:`.render`) is a pure function of these parameters and the output size, so
the same parameters give the same picture at 64 or 512 px and the manifest can record
exactly what was generated.

Coordinates are anatomical and normalised: ``u`` runs left to right across the image
(-1..1; the patient's right lung is on the image's left, as on every PA film), ``v`` runs
top to bottom (-1..1). "right"/"left" always mean the patient's side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PHANTOM_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia", "Pneumothorax")
SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class PatientParams:
    """How this patient and this exposure differ from the average film.

    The ranges are wide on purpose: position, size, habitus, inspiration and exposure vary
    more between patients than a finding changes the image's global statistics, so no
    single global number gives the class away.
    """

    rotation_deg: float  # in-plane rotation of the patient, degrees
    scale: float  # size of the thorax in the field of view
    shift_u: float  # centring error, normalised units
    shift_v: float
    habitus: float  # chest width factor (asthenic < 1 < hypersthenic)
    inspiration: float  # 0 = shallow (high domes), 1 = deep (low, flat domes)
    heart_size: float  # cardiothoracic ratio factor
    soft_tissue: float  # soft-tissue thickness factor
    exposure: float  # attenuation gain k in I = 1 - exp(-k A)
    gamma: float  # display gamma
    window_low: float  # display window on the exposure scale
    window_high: float
    noise: float  # quantum noise standard deviation (at full brightness)
    blur: float  # detector blur, in pixels at 128 px (scaled with size)
    heel: float  # strength of the anode heel gradient
    heel_angle: float  # its direction, radians
    skin_fold: bool  # a skin fold: a faint line that can mimic a pleural edge
    skin_fold_side: str
    vessel_seed: int  # seeds the vessel trees and parenchymal texture
    texture_seed: int


@dataclass(frozen=True)
class Consolidation:
    """One focus of pneumonic consolidation: air spaces filled with fluid (an opacity)."""

    side: str
    zone: str
    center_u: float  # position inside the lung, as a fraction of its half-width (-1 medial .. 1 lateral)
    center_v: float  # position inside the zone, fraction of the zone height (0..1)
    radius: float  # normalised units
    elongation: float  # axis ratio
    angle: float  # radians
    density: float  # fraction of air replaced, 0..1 (hazy .. dense)
    lobar: bool  # bounded by a fissure (straight edge) rather than patchy all round
    irregularity: float  # how ragged the margin is


@dataclass(frozen=True)
class Pneumothorax:
    """Air in the pleural space: the lung collapses away from the chest wall."""

    side: str
    kind: str  # "apical" (air at the apex) or "lateral" (along the lateral wall)
    fraction: float  # how far the lung edge is displaced, as a fraction of the lung's size


@dataclass(frozen=True)
class PhantomParams:
    """Everything needed to render one phantom radiograph."""

    label: int
    patient: PatientParams
    consolidations: tuple[Consolidation, ...] = ()
    pneumothorax: Pneumothorax | None = None

    @property
    def class_name(self) -> str:
        return PHANTOM_CLASSES[self.label]

    def to_record(self) -> dict[str, object]:
        """A flat dict of the generator parameters, for the manifest."""
        out: dict[str, object] = {f"patient_{k}": _round(v) for k, v in asdict(self.patient).items()}
        out["n_consolidations"] = len(self.consolidations)
        if self.consolidations:
            out["consolidation_sides"] = "|".join(c.side for c in self.consolidations)
            out["consolidation_zones"] = "|".join(c.zone for c in self.consolidations)
            out["consolidation_radii"] = "|".join(f"{c.radius:.3f}" for c in self.consolidations)
            out["consolidation_densities"] = "|".join(f"{c.density:.3f}" for c in self.consolidations)
            out["consolidation_lobar"] = "|".join(str(int(c.lobar)) for c in self.consolidations)
        if self.pneumothorax is not None:
            out["pneumothorax_side"] = self.pneumothorax.side
            out["pneumothorax_kind"] = self.pneumothorax.kind
            out["pneumothorax_fraction"] = round(self.pneumothorax.fraction, 4)
        return out


def _round(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def sample_patient(rng: np.random.Generator) -> PatientParams:
    """Draw a patient and an exposure."""
    low = rng.uniform(0.02, 0.16)
    return PatientParams(
        rotation_deg=float(rng.normal(0.0, 2.5)),
        scale=float(rng.uniform(0.86, 1.06)),
        shift_u=float(rng.uniform(-0.06, 0.06)),
        shift_v=float(rng.uniform(-0.06, 0.06)),
        habitus=float(rng.uniform(0.86, 1.14)),
        inspiration=float(rng.uniform(0.0, 1.0)),
        heart_size=float(rng.uniform(0.88, 1.18)),
        soft_tissue=float(rng.uniform(0.75, 1.35)),
        exposure=float(rng.uniform(1.5, 2.7)),
        gamma=float(rng.uniform(0.75, 1.3)),
        window_low=float(low),
        window_high=float(rng.uniform(0.8, 0.98)),
        noise=float(rng.uniform(0.006, 0.028)),
        blur=float(rng.uniform(0.35, 1.0)),
        heel=float(rng.uniform(0.0, 0.12)),
        heel_angle=float(rng.uniform(0.0, 2 * np.pi)),
        skin_fold=bool(rng.random() < 0.2),
        skin_fold_side=str(rng.choice(SIDES)),
        vessel_seed=int(rng.integers(0, 2**31 - 1)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_consolidations(rng: np.random.Generator) -> tuple[Consolidation, ...]:
    """One to three foci: patchy bronchopneumonia or a lobar consolidation, any zone, either side."""
    lobar = bool(rng.random() < 0.35)
    count = 1 if lobar else int(rng.choice([1, 1, 2, 3]))
    foci = []
    first_side = str(rng.choice(SIDES))
    for i in range(count):
        side = first_side if (i == 0 or rng.random() < 0.6) else ("left" if first_side == "right" else "right")
        foci.append(
            Consolidation(
                side=side,
                zone=str(rng.choice(ZONES)),
                center_u=float(rng.uniform(-0.55, 0.6)),
                center_v=float(rng.uniform(0.2, 0.8)),
                radius=float(rng.uniform(0.16, 0.28) if lobar else rng.uniform(0.1, 0.2)),
                elongation=float(rng.uniform(0.6, 1.0)),
                angle=float(rng.uniform(0.0, np.pi)),
                density=float(rng.uniform(0.45, 0.9)),
                lobar=lobar,
                irregularity=float(rng.uniform(0.15, 0.5)),
            )
        )
    return tuple(foci)


def sample_pneumothorax(rng: np.random.Generator) -> Pneumothorax:
    """A small to large pneumothorax, apical or lateral, on either side."""
    return Pneumothorax(
        side=str(rng.choice(SIDES)),
        kind=str(rng.choice(["apical", "lateral"], p=[0.45, 0.55])),
        fraction=float(rng.uniform(0.15, 0.45)),
    )


def sample_params(rng: np.random.Generator, label: int) -> PhantomParams:
    """Draw the parameters of one phantom of class ``label`` (index into PHANTOM_CLASSES)."""
    if not 0 <= label < len(PHANTOM_CLASSES):
        raise ValueError(f"label must be 0..{len(PHANTOM_CLASSES) - 1} ({', '.join(PHANTOM_CLASSES)}), got {label}")
    patient = sample_patient(rng)
    if label == 1:
        return PhantomParams(label=label, patient=patient, consolidations=sample_consolidations(rng))
    if label == 2:
        return PhantomParams(label=label, patient=patient, pneumothorax=sample_pneumothorax(rng))
    return PhantomParams(label=label, patient=patient)
