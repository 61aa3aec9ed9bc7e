"""``mr.train``: train a zoo architecture on a data source with the study's recipe, test it
on the held-out split, and save a checkpoint (:mod:`medrobust.evaluation.zoo_training`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import open_images


@dataclass
class Trained:
    """The trained model (best validation epoch), its history, and test-split loss and accuracy.

    Args:
        model: the trained Classifier, with the best validation epoch's weights.
        history: one record per epoch (:class:`~medrobust.models.training.TrainResult`'s).
        best_epoch: the epoch of the lowest validation loss.
        best_val_loss: that loss.
        test_loss: the loss on the test split.
        test_accuracy: the accuracy on the test split.
        seconds: the training's time.
        n_train: images in the train split (readable ones).
        n_val: images in the validation split.
        n_test: images in the test split.
        skipped: unreadable files, one line each.
        saved: the checkpoint folder, when one was written. Default None.
    """

    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float
    n_train: int
    n_val: int
    n_test: int
    skipped: list[str]
    saved: Path | None = None


def train(data: Any = "phantom", arch: str = "densenet121", *, size: int = 64, epochs: int = 30, batch_size: int = 32,
          lr: float | None = None, weights: str = "none", trainable: str = "all", two_phase: bool = False,
          class_weighted: bool = False, lr_schedule: str = "plateau", warmup_epochs: float = 0.0, augment: bool = True,
          noise_sigma: float = 0.0, per_class: int = 600, seed: int = 0,
          device: str = "auto", download: bool = False, adversarial: str | None = None,
          out: str | Path | None = None, progress: Progress | None = None) -> Trained:
    """Train ``arch`` on the train split of ``data`` (validated on val, tested on test; a
    folder is split 60/20/20 unless it has train/val/test folders).

    Training is a fixed amount of work (``epochs``, or fewer by early stopping), so with one
    thread the same seed on the same machine gives the same model (with more, oneDNN's
    convolutions may round differently from run to run). Every name and spec is checked before
    any image is read.

    Args:
        data: a labelled data source (see :func:`mr.open_images`). Default ``"phantom"``.
        arch: a zoo architecture (``medrobust models``). Default ``"densenet121"``.
        size: the side images are resized to. Default 64.
        epochs: the most epochs. Default 30.
        batch_size: images per update. Default 32.
        lr: the learning rate. Default None: 1e-5 with pre-trained weights, 1e-3 from scratch.
        weights: ``"none"`` (from scratch, the default), ``"imagenet"`` or a weights file (see
            :func:`~medrobust.models.zoo.build_classifier`).
        trainable: which layers train: ``head``, ``last-block``, ``last:N`` or ``all`` (the
            default).
        two_phase: train the head alone first, then by ``trainable``. Default False.
        class_weighted: weight the loss by inverse class frequency. Default False.
        lr_schedule: ``"plateau"`` (the study's, the default) or ``"cosine"``.
        warmup_epochs: epochs of linear warm-up before the schedule. Default 0.
        augment: the study's augmentation on training batches. Default True.
        noise_sigma: Gaussian noise of this standard deviation ([0, 1] image units, not clipped)
            added to each training batch, as Cohen et al. (2019) train the base model of a smoothed
            classifier (:func:`mr.certify` at the same sigma). Default 0: none.
        per_class: phantoms per class, for ``data="phantom"``. Default 600.
        seed: seeds the initial weights, the training's draws and the phantoms. Default 0.
        device: where to train (``auto``, the default: CUDA when present).
        download: allow downloading ImageNet weights. Default False.
        adversarial: an attack spec for adversarial training (Madry et al. 2018), e.g.
            ``"pgd:eps=4/255"``. Default None.
        out: a checkpoint folder to save to (checked before training starts); the state after
            each epoch is kept in ``out/training/`` until the model is saved, and an interrupted
            training of the same settings and images resumes there after its last finished
            epoch. Default None: not saved.
        progress: reports the stage ``reading`` and the training's epochs. Default None: silent.

    Returns:
        The :class:`Trained` model, its history and its test-split loss and accuracy.

    Raises:
        ValueError: an unknown architecture, attack spec or setting, unlabelled images, or data
            without a train, val or test split.
    """
    from medrobust.evaluation.zoo_training import save_trained_model, train_zoo_model
    from medrobust.models.augment import NO_AUGMENTATION, AugmentConfig
    from medrobust.models.device import resolve_device
    from medrobust.models.training import TrainConfig, evaluate_loss

    if out is not None:
        from medrobust.evaluation.run_dir import check_output_folder

        check_output_folder(Path(out))  # before training, not after it: a run must not end by failing to save
    from medrobust.layer.models import check_contract

    check_contract(arch=arch)  # the names, before any image is read
    if adversarial:
        from medrobust.attacks.registry import build_attack

        build_attack(adversarial)  # as the training will build it
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, trainable=trainable, two_phase=two_phase,
                         class_weighted=class_weighted, seed=seed, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                         augment=AugmentConfig() if augment else NO_AUGMENTATION, noise_sigma=noise_sigma)
    dev = resolve_device(device)
    images = open_images(data, size=size, per_class=per_class, seed=seed)
    if images.dataset is None or not images.labelled:
        raise ValueError(f"{images.source}: training needs labelled images with train/val/test splits")
    parts = images.dataset.splits()
    missing = {"train", "val", "test"} - set(parts)
    if missing:
        raise ValueError(f"{data}: the data has no {', '.join(sorted(missing))} split; give it train/val/test images")
    with (progress or SilentProgress()).stage("reading", len(images)) as bar:
        loaded = {}
        for name, part in parts.items():
            loaded[name] = open_images(part).load()
            bar.advance(len(part))
    skipped = list(dict.fromkeys([*images.skipped, *(str(s) for p in parts.values() for s in p.skipped)]))
    model, result = train_zoo_model(arch, images.classes or [], size, loaded["train"][:2], loaded["val"][:2], config,
                                    weights=weights, adversarial=adversarial, device=dev, download=download,
                                    progress=progress, folder=out)
    test_loss, test_acc = evaluate_loss(model, *loaded["test"][:2])
    saved = None
    if out is not None:
        saved = save_trained_model(model, out, config, result, weights=weights, adversarial=adversarial, data=str(data),
                                   size=size, metrics={"test_loss": test_loss, "test_accuracy": test_acc})
    return Trained(model=model, history=result.history, best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                   test_loss=test_loss, test_accuracy=test_acc, seconds=result.seconds, n_train=len(loaded["train"][0]),
                   n_val=len(loaded["val"][0]), n_test=len(loaded["test"][0]), skipped=skipped, saved=saved)
