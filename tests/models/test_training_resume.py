"""An interrupted training resumes after its last finished epoch and ends with exactly the model
an uninterrupted training gives (one thread: with more, oneDNN may round differently from run
to run either way)."""

from __future__ import annotations

import pytest
import torch

from medrobust.data.phantom import PhantomDataset
from medrobust.evaluation.zoo_training import save_trained_model, train_zoo_model
from medrobust.models.epoch_checkpoint import epoch_checkpoint_path
from medrobust.models.training import TrainConfig, train_classifier
from medrobust.models.zoo import build_classifier


@pytest.fixture(scope="module")
def splits():
    ds = PhantomDataset(per_class=16, size=32, seed=11)
    return {name: part.load()[:2] for name, part in ds.splits().items()}, ds.classes


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fresh(classes, seed: int):
    torch.manual_seed(seed)
    return build_classifier("small-cnn", classes, 32)


def _timeless(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs"


class _Interrupt:
    """An ``on_batch`` callback that raises KeyboardInterrupt at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch, self.current = epoch, batch, 1

    def __call__(self, b: int, n: int) -> None:
        if (self.current, b) == (self.epoch, self.batch):
            raise KeyboardInterrupt
        if b == n:
            self.current += 1


CASES = {
    # the study's plateau schedule and early stopping, rates that move: interrupted inside epoch 2
    "plateau": (dict(epochs=4, lr=0.03, plateau_patience=0, early_stopping_patience=2), (2, 1)),
    # early stopping counts the epochs without improvement from before the interruption (stops at 4)
    "early stopping": (dict(epochs=6, lr=0.02, early_stopping_patience=2), (4, 1)),
    # interrupted right after the best epoch (2): its weights, saved once as the model's, are the result
    "after the best epoch": (dict(epochs=6, lr=0.02, early_stopping_patience=2), (3, 1)),
    # two phases (head, then all), warm-up and cosine: interrupted in the first epoch of phase 2
    "phase boundary": (dict(epochs=3, two_phase=True, head_epochs=1, lr_schedule="cosine", warmup_epochs=0.5), (2, 2)),
    # interrupted in the middle of phase 2 (its optimiser, cosine schedule and early stopping continue)
    "inside phase 2": (dict(epochs=4, two_phase=True, head_epochs=1, lr=0.01, lr_schedule="cosine"), (3, 1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_training_resumes_to_the_same_weights_bit_for_bit(tmp_path, splits, one_thread, case) -> None:
    data, classes = splits
    settings, (epoch, batch) = CASES[case]
    config = TrainConfig(batch_size=16, seed=3, **settings)

    whole = _fresh(classes, 3)
    uninterrupted = train_classifier(whole, data["train"], data["val"], config)

    checkpoint = tmp_path / "training" / "epoch.pt"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(_fresh(classes, 3), data["train"], data["val"], config, checkpoint=checkpoint,
                         on_batch=_Interrupt(epoch, batch))
    assert checkpoint.is_file()

    resumed_from: list = []
    again = _fresh(classes, 3)
    resumed = train_classifier(again, data["train"], data["val"], config, checkpoint=checkpoint,
                               on_resume=resumed_from.append)
    assert [[h["epoch"] for h in history] for history in resumed_from] == [list(range(1, epoch))]
    assert _timeless(resumed.history) == _timeless(uninterrupted.history)
    assert (resumed.best_epoch, resumed.stopped_early) == (uninterrupted.best_epoch, uninterrupted.stopped_early)
    _assert_same_weights(again, whole)


def test_a_checkpoint_of_another_training_is_not_resumed(tmp_path, splits, one_thread) -> None:
    data, classes = splits
    checkpoint = tmp_path / "epoch.pt"
    other = TrainConfig(epochs=2, batch_size=16, seed=4)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(_fresh(classes, 4), data["train"], data["val"], other, checkpoint=checkpoint,
                         on_batch=_Interrupt(2, 1))
    config = TrainConfig(epochs=2, batch_size=16, seed=3)
    whole = _fresh(classes, 3)
    train_classifier(whole, data["train"], data["val"], config)
    resumed_from: list = []
    fresh = _fresh(classes, 3)
    train_classifier(fresh, data["train"], data["val"], config, checkpoint=checkpoint, on_resume=resumed_from.append)
    assert resumed_from == []  # started at epoch 1
    _assert_same_weights(fresh, whole)


class _Recorder:
    """A progress protocol that records what each stage is told, and can interrupt an advance."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.events: list[tuple[str, int]] = []
        self.interrupt_at = interrupt_at

    def stage(self, name: str, total: int):
        from contextlib import contextmanager

        recorder = self

        class Stage:
            def advance(self, n: int = 1) -> None:
                recorder.events.append(("advance", n))
                if recorder.interrupt_at is not None and len(recorder.events) == recorder.interrupt_at:
                    raise KeyboardInterrupt

            def resumed(self, n: int) -> None:
                recorder.events.append(("resumed", n))

        @contextmanager
        def ctx():
            yield Stage()

        return ctx()


def test_a_zoo_model_resumes_in_its_folder_and_the_epoch_checkpoint_goes_when_it_is_saved(tmp_path, splits,
                                                                                         one_thread) -> None:
    data, classes = splits
    config = TrainConfig(epochs=3, batch_size=16, seed=3)

    def train(folder, progress):
        return train_zoo_model("small-cnn", classes, 32, data["train"], data["val"], config, folder=folder,
                               progress=progress)

    whole, _ = train(None, None)
    folder = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):  # stopped after epoch 2 was saved
        train(folder, _Recorder(interrupt_at=2))
    assert epoch_checkpoint_path(folder).is_file()
    progress = _Recorder()
    model, result = train(folder, progress)
    assert progress.events == [("resumed", 2), ("advance", 1)]  # two epochs read back, one trained
    _assert_same_weights(model, whole)
    save_trained_model(model, folder, config, result, weights="none", adversarial=None, data="phantom")
    assert (folder / "model.json").is_file() and not (folder / "training").exists()


def test_ctrl_c_while_the_epoch_is_saved_takes_effect_once_the_file_is_complete(tmp_path, monkeypatch) -> None:
    import signal

    import medrobust.models.epoch_checkpoint as epoch_checkpoint

    def save_interrupted_half_way(obj, handle) -> None:
        handle.write(b"first half, ")
        signal.raise_signal(signal.SIGINT)  # torch.save would turn the KeyboardInterrupt into its own error
        handle.write(b"second half")

    monkeypatch.setattr(epoch_checkpoint.torch, "save", save_interrupted_half_way)
    path = tmp_path / "training" / "epoch.pt"
    # as in a terminal: a suite started in the background without job control inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler for the code to defer
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            epoch_checkpoint.save_epoch_checkpoint(path, "key", {})
        assert path.read_bytes() == b"first half, second half"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
