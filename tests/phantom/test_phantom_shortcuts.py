"""Acceptance figures of the phantom dataset: no global statistic and no coarse thumbnail
gives the class away (a classifier has to learn the signs), yet the classes do differ."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medrobust.data.phantom import PhantomDataset
from medrobust.data.resize import resize_image

PER_CLASS = 300


@pytest.fixture(scope="module")
def phantoms() -> tuple[np.ndarray, np.ndarray]:
    dataset = PhantomDataset(per_class=PER_CLASS, size=64, seed=2024, fractions=None)
    x, y, _ = dataset.load()
    return x[:, 0].numpy(), y.numpy()


def _best_cv_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Best 5-fold accuracy of a logistic regression over a grid of regularisation strengths."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = []
    for c in (0.01, 0.1, 1.0, 10.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        scores.append(cross_val_score(model, features, labels, cv=folds).mean())
    return float(max(scores))


def test_global_statistics_do_not_give_the_class_away(phantoms) -> None:
    images, labels = phantoms
    flat = images.reshape(len(images), -1)
    stats = np.column_stack([flat.mean(1), flat.std(1), *np.percentile(flat, [5, 50, 95], axis=1)])
    accuracy = _best_cv_accuracy(stats, labels)
    print(f"logistic regression on global statistics: {accuracy:.3f}")
    assert accuracy <= 0.60


def test_thumbnails_do_not_give_the_class_away_but_carry_some_signal(phantoms) -> None:
    images, labels = phantoms
    thumbs = np.stack([resize_image(im, 16) for im in images]).reshape(len(images), -1)
    accuracy = _best_cv_accuracy(thumbs, labels)
    print(f"logistic regression on 16x16 thumbnails: {accuracy:.3f}")
    assert accuracy <= 0.85
    assert accuracy >= 0.45  # the findings are there (chance is 0.33)
