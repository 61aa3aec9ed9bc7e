"""Keras 3 models through load_classifier: same probabilities as Keras, logits not
probabilities, gradients to the input (the torch backend makes them white-box models)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from medrobust.models.keras_model import KerasNetwork  # noqa: E402  (after the importorskip)
from medrobust.models.loading import load_classifier  # noqa: E402

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]

# Keras's torch backend with numpy 2 (inside Keras, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _cnn(head: keras.layers.Layer, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, head(h))


@pytest.fixture(scope="module")
def softmax_file(tmp_path_factory) -> tuple[keras.Model, object]:
    model = _cnn(keras.layers.Dense(3, activation="softmax"))
    path = tmp_path_factory.mktemp("keras") / "m.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def test_probabilities_match_keras_predict(softmax_file, images):
    model, path = softmax_file
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")

    assert loaded.metadata["format"] == "keras" and loaded.metadata["logits"] == "exact"
    assert loaded.contract.channels_last and loaded.input_size == (32, 32)
    assert loaded.contract.network_channels == 1 and loaded.contract.intensity.value == "unit"
    expected = model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0)  # Keras's own NHWC answer
    np.testing.assert_allclose(loaded.predict_proba(images).numpy(), expected, rtol=0, atol=1e-5)


def test_network_returns_logits_not_probabilities(softmax_file, images):
    model, path = softmax_file
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")
    assert isinstance(loaded.network, KerasNetwork)
    nhwc = images.permute(0, 2, 3, 1)
    with torch.no_grad():
        z = loaded.network(nhwc)
        p = model(nhwc, training=False)
    torch.testing.assert_close(z.softmax(1), p, rtol=0, atol=1e-6)
    assert not torch.allclose(z.exp().sum(1), torch.ones(len(z)), atol=1e-3)  # not log-probabilities either
    # a double softmax would flatten the probabilities towards uniform: it does not happen
    assert not torch.allclose(p.softmax(1), p, atol=1e-3)
    torch.testing.assert_close(loaded.predict_proba(images), p, rtol=0, atol=1e-5)


def test_input_gradients_flow_through_keras(softmax_file, images):
    _, path = softmax_file
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")
    x = images.clone().requires_grad_(True)
    loss = loaded.loss(loaded(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("style", ["functional", "sequential"])
def test_sigmoid_binary_model(tmp_path, images, style):
    if style == "functional":
        model = _cnn(keras.layers.Dense(1, activation="sigmoid"), seed=1)
    else:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    path = tmp_path / "binary.keras"
    model.save(path)

    loaded = load_classifier(path, classes=["Normal", "Pneumonia"], intensity="unit", output_kind="binary")

    assert loaded.metadata["logits"] == "exact"

    p_pos = model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0)[:, 0]
    proba = loaded.predict_proba(images).numpy()
    assert proba.shape == (6, 2)
    np.testing.assert_allclose(proba[:, 1], p_pos, rtol=0, atol=1e-5)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(images).numpy(), (p_pos > 0.5).astype(np.int64))
    with torch.no_grad():  # logits, so sigmoid(logits) is the probability (no double sigmoid)
        z = loaded(images)
    np.testing.assert_allclose(torch.sigmoid(z)[:, 0].numpy(), p_pos, rtol=0, atol=1e-5)


@pytest.mark.parametrize("final", ["layer", "operation"])
def test_final_activation_layer_is_peeled_off(tmp_path, images, final):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    z = keras.layers.Dense(3)(h)
    outputs = keras.layers.Softmax()(z) if final == "layer" else keras.ops.softmax(z)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "act.keras"
    model.save(path)
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")
    assert loaded.metadata["logits"] == "exact"
    expected = model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0)
    np.testing.assert_allclose(loaded.predict_proba(images).numpy(), expected, rtol=0, atol=1e-5)


def test_contract_mismatch_with_the_file_is_a_clear_error(softmax_file):
    _, path = softmax_file
    with pytest.raises(ValueError, match=r"m\.keras: input size \(64, 64\) was given but the Keras model takes \(32, 32\)"):
        load_classifier(path, classes=CLASSES, intensity="unit", input_size=64)
    with pytest.raises(ValueError, match=r"m\.keras: 3 network channels were given but the Keras model takes 1"):
        load_classifier(path, classes=CLASSES, intensity="unit", network_channels=3)
    with pytest.raises(ValueError, match=r"m\.keras: a softmax model with 2 classes"):
        load_classifier(path, classes=["a", "b"], intensity="unit")


def test_probability_fallback_when_told(softmax_file, images):
    """outputs="probabilities" inverts the softmax (log p): same probabilities, finite gradients."""
    model, path = softmax_file
    loaded = load_classifier(path, classes=CLASSES, intensity="unit", outputs="probabilities")
    assert loaded.metadata["logits"] == "inverted softmax"
    expected = model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0)
    np.testing.assert_allclose(loaded.predict_proba(images).numpy(), expected, rtol=0, atol=1e-5)
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loaded.loss(loaded(x), torch.zeros(6, dtype=torch.long)), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_another_keras_backend_is_refused(monkeypatch):
    from medrobust.models.keras_model import import_keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(RuntimeError, match="already imported with the 'tensorflow' backend.*KERAS_BACKEND=torch"):
        import_keras()
    monkeypatch.undo()
    # before Keras is imported, a KERAS_BACKEND other than torch is refused without importing it
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.delitem(sys.modules, "keras")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND is 'jax'.*set KERAS_BACKEND=torch"):
        import_keras()
    assert "keras" not in sys.modules
