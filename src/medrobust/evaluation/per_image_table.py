"""``RUN/per_image.csv``: one row per attacked image and attack, for a vendor's own analysis.

Columns: the image's id and true class, the model's answer on the clean image, the attack (its
key, where it was crafted, its budget in grey levels), the answer on the adversarial image and
whether each was right, which member of an ensemble broke the image (``broken_by``: AutoAttack's
``apgd-ce``, ``apgd-t`` or ``square``; ``clean`` when the model was wrong before any attack;
blank for other attacks and for images no member broke), then the defended model's answer on that adversarial image for each
defense, and for each detector whether it flagged the image (blank where that detector did not
judge that attack's images: it judges the white-box attacks at their main budget).

Every value is read from the run's stored stage arrays: the table is a view of finished work,
written by the driver after the last stage, and rewritten identically on a resumed run.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from medrobust.data.class_names import decision_name

PER_IMAGE_FILE = "per_image.csv"


@dataclass(frozen=True)
class AttackColumns:
    """One attack's per-image arrays: its decisions, and per defense and detector the extras."""

    key: str
    source: str
    eps: float
    pred: np.ndarray
    defended: dict[str, np.ndarray]  # defense spec -> defended decisions on this attack's images
    flagged: dict[str, np.ndarray]  # detector name -> flags on this attack's images
    broken_by: np.ndarray | None = None  # an ensemble's member that broke each image ("" none)


def per_image_csv(ids: np.ndarray, labels: np.ndarray, clean_pred: np.ndarray, classes: list[str],
                  attacks: list[AttackColumns], defenses: list[str], detectors: list[str]) -> str:
    """The CSV text (see the module docstring); ``defenses``/``detectors`` fix the columns' order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "true_class", "clean_prediction", "clean_correct", "attack", "crafted_on", "budget_grey_levels",
                     "adversarial_prediction", "adversarial_correct", "broken_by",
                     *(f"defended_prediction[{d}]" for d in defenses), *(f"flagged[{d}]" for d in detectors)])
    for attack in attacks:
        for i, item in enumerate(ids.tolist()):
            truth, clean, adv = int(labels[i]), int(clean_pred[i]), int(attack.pred[i])
            row = [item, classes[truth], decision_name(classes, clean), int(clean == truth), attack.key, attack.source,
                   f"{attack.eps * 255:g}", decision_name(classes, adv), int(adv == truth),
                   str(attack.broken_by[i]) if attack.broken_by is not None else ""]
            row += [decision_name(classes, int(attack.defended[d][i])) if d in attack.defended else "" for d in defenses]
            row += [int(bool(attack.flagged[d][i])) if d in attack.flagged else "" for d in detectors]
            writer.writerow(row)
    return out.getvalue()
