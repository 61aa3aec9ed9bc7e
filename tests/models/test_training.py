"""The training recipe on the small CNN: learning, determinism, early stopping, trainable
policies, augmentation, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from medrobust.data.phantom import PhantomDataset
from medrobust.models.augment import AugmentConfig, random_affine
from medrobust.models.checkpoint import load_checkpoint, save_checkpoint
from medrobust.models.classifier import count_parameters
from medrobust.models.trainable import apply_trainable
from medrobust.models.training import TrainConfig, evaluate_loss, train_classifier
from medrobust.models.zoo import build_classifier


@pytest.fixture(scope="module")
def phantom_splits():
    ds = PhantomDataset(per_class=40, size=32, seed=11)
    return {name: part.load()[:2] for name, part in ds.splits().items()}, ds.classes


def _train(splits, classes, seed=0, epochs=3, **kw):
    torch.manual_seed(seed)
    model = build_classifier("small-cnn", classes, 32)
    config = TrainConfig(epochs=epochs, batch_size=16, seed=seed, **kw)
    result = train_classifier(model, splits["train"], splits["val"], config)
    return model, result


def test_same_seed_gives_the_same_final_weights(phantom_splits) -> None:
    splits, classes = phantom_splits
    a, ra = _train(splits, classes, seed=5)
    b, rb = _train(splits, classes, seed=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    def timeless(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert timeless(ra.history) == timeless(rb.history)
    c, _ = _train(splits, classes, seed=6)
    assert not torch.equal(a.network.head.weight, c.network.head.weight)


def test_history_has_the_curves_and_best_weights_are_restored(phantom_splits) -> None:
    splits, classes = phantom_splits
    model, result = _train(splits, classes, epochs=4)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert all(key in h for h in result.history)
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_epoch == best["epoch"]
    val_loss, _ = evaluate_loss(model, *splits["val"])
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_early_stopping_and_plateau_schedule(phantom_splits) -> None:
    splits, classes = phantom_splits
    # a learning rate so small nothing improves: after the first epoch sets the best val loss,
    # the LR halves after each flat epoch (patience 0) and training stops after 2 flat epochs
    _, result = _train(splits, classes, epochs=20, lr=1e-12, min_lr=0.0, early_stopping_patience=2,
                       plateau_patience=0)
    assert result.stopped_early
    assert len(result.history) == 3
    lrs = [h["lr"] for h in result.history]
    assert lrs == pytest.approx([1e-12, 1e-12, 5e-13])


def test_small_cnn_learns_the_phantoms() -> None:
    ds = PhantomDataset(per_class=150, size=32, seed=11)
    splits = {name: part.load()[:2] for name, part in ds.splits().items()}
    torch.manual_seed(0)
    model = build_classifier("small-cnn", ds.classes, 32)
    config = TrainConfig(epochs=20, batch_size=32, lr=3e-3, seed=0, augment=AugmentConfig(True, 0, 0, 0, 0),
                         early_stopping_patience=20)
    train_classifier(model, splits["train"], splits["val"], config)
    _, acc = evaluate_loss(model, *splits["test"])
    assert acc > 0.7  # chance is 0.33; about 0.83 after a few seconds on 270 images


def test_trainable_policies() -> None:
    net = build_classifier("densenet121", ["a", "b", "c"]).network
    head = count_parameters(net.head)
    assert apply_trainable(net, "head") == (head, count_parameters(net))
    t_block, _ = apply_trainable(net, "last-block")
    t_last, _ = apply_trainable(net, "last:5")
    t_all, total = apply_trainable(net, "all")
    assert head < t_last < t_block < t_all == total
    with pytest.raises(ValueError, match="unknown trainable policy"):
        apply_trainable(net, "some")


def test_two_phase_trains_the_head_first(phantom_splits) -> None:
    splits, classes = phantom_splits
    _, result = _train(splits, classes, epochs=3, two_phase=True, head_epochs=1, trainable="all")
    assert [h["phase"] for h in result.history] == ["head", "all", "all"]


def test_augmentation_is_seeded_in_range_and_keeps_shape() -> None:
    x = torch.rand(6, 1, 24, 24)
    a = random_affine(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = random_affine(x, AugmentConfig(), torch.Generator().manual_seed(1))
    c = random_affine(x, AugmentConfig(), torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(random_affine(x, AugmentConfig(False, 0, 0, 0, 0), torch.Generator()), x)


def test_flip_only_augmentation_flips_exactly() -> None:
    x = torch.rand(64, 1, 8, 8)
    out = random_affine(x, AugmentConfig(True, 0, 0, 0, 0), torch.Generator().manual_seed(0))
    flipped = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < int(flipped.sum()) < 54


def test_checkpoint_round_trip_is_exact(tmp_path, phantom_splits) -> None:
    splits, classes = phantom_splits
    model, result = _train(splits, classes, epochs=1)
    save_checkpoint(model, tmp_path / "ck", extra={"history": result.history, "metrics": {"test_accuracy": 0.5}})
    meta = json.loads((tmp_path / "ck" / "model.json").read_text())
    assert meta["arch"] == "small-cnn" and meta["contract"]["classes"] == classes
    assert meta["contract"]["intensity"] == "unit" and meta["history"][0]["epoch"] == 1
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.contract == model.contract
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = splits["test"][0]
    assert torch.equal(loaded.logits(x), model.logits(x))
    assert loaded.metadata["metrics"]["test_accuracy"] == 0.5


def test_adversarial_training_buys_robustness(phantom32, trained_small_cnn) -> None:
    from medrobust.attacks.registry import build_attack

    splits, classes = phantom32
    torch.manual_seed(0)
    robust = build_classifier("small-cnn", classes, 32)
    config = TrainConfig(epochs=20, batch_size=32, lr=3e-3, seed=0, augment=AugmentConfig(True, 0, 0, 0, 0),
                         early_stopping_patience=20)
    train_classifier(robust, splits["train"], splits["val"], config, adversary=build_attack("fgsm", eps=4 / 255))
    x, y = splits["test"]
    pgd = build_attack("pgd", eps=4 / 255, steps=10)
    robust_acc = float((robust.predict(pgd(robust, x, y)) == y).float().mean())
    plain_acc = float((trained_small_cnn.predict(pgd(trained_small_cnn, x, y)) == y).float().mean())
    assert robust_acc > plain_acc + 0.1
