"""Square Attack: the schedule, the stripes start, per-image query counts, the losses per output
kind, budget/range/determinism properties, its effect on a trained CNN, and a black-box ONNX model."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.attacks.budget import Budget
from medrobust.attacks.registry import build_attack, list_attacks
from medrobust.attacks.square import SquareAttack, SquareObjective, square_p_schedule
from medrobust.models.classifier import Classifier, InputContract, NotDifferentiableError
from medrobust.models.output_kind import OutputKind

EPS = 8 / 255


class Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(n_in, n_out)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(n_out, n_in, generator=g) * 3)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Constant(nn.Module):
    """Ignores its input: the search can never improve, so every image uses the whole budget."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([5.0] + [0.0] * (self.k - 1)).expand(len(x), self.k)


def classifier(network: nn.Module, kind: str = "softmax", classes=("a", "b", "c")) -> Classifier:
    contract = InputContract(classes=tuple(classes), network_channels=1, intensity="unit", output_kind=kind)
    return Classifier(network, contract).eval()


def stored_images(n: int, size: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(n, channels, size, size, generator=g) * 255) / 255


def test_registered_and_built_from_a_spec() -> None:
    assert "square" in list_attacks()
    attack = build_attack("square:eps=4/255,queries=50,p_init=0.3,findings=A;B")
    assert isinstance(attack, SquareAttack) and not attack.needs_gradients
    assert attack.eps == pytest.approx(4 / 255) and attack.queries == 50 and attack.p_init == 0.3
    assert attack.findings == ["A", "B"]
    assert attack.last_queries is None and attack.last_success is None
    assert "last_queries" not in attack.describe()  # results are not settings
    for bad in ({"queries": 0}, {"p_init": 0.0}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            SquareAttack(**bad)


def test_p_schedule_is_the_papers_rescaled_to_the_budget() -> None:
    assert square_p_schedule(0.8, 0, 10000) == 0.8
    assert square_p_schedule(0.8, 10, 10000) == 0.8
    assert square_p_schedule(0.8, 11, 10000) == 0.4
    assert square_p_schedule(0.8, 50, 10000) == 0.4
    assert square_p_schedule(0.8, 51, 10000) == 0.2
    assert square_p_schedule(0.8, 600, 10000) == 0.8 / 16
    assert square_p_schedule(0.8, 9999, 10000) == 0.8 / 512
    # rescaled: 1000 queries reach the same halvings ten times sooner
    assert square_p_schedule(0.8, 2, 1000) == 0.4  # 2 / 1000 * 10000 = 20
    assert square_p_schedule(0.8, 60, 1000) == 0.8 / 16  # 600
    values = [square_p_schedule(0.8, i, 1000) for i in range(1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_stripes_start_and_full_budget_when_the_search_cannot_improve() -> None:
    model = classifier(Constant())
    x = torch.full((3, 1, 10, 12), 128 / 255)
    y = torch.zeros(3, dtype=torch.long)
    attack = SquareAttack(eps=EPS, queries=2)
    x_adv = attack(model, x, y)
    delta = x_adv - x
    # vertical stripes: +-eps, constant down each column
    assert torch.allclose(delta.abs(), torch.full_like(delta, EPS), atol=1e-6)
    assert torch.equal(delta, delta[:, :, :1, :].expand_as(delta))
    assert attack.last_queries.tolist() == [2, 2, 2]
    assert not attack.last_success.any()
    attack = SquareAttack(eps=EPS, queries=25)
    attack(model, x, y)
    assert attack.last_queries.tolist() == [25, 25, 25]


def test_queries_are_counted_per_image_and_stop_at_success() -> None:
    model = classifier(Linear(64, 3, seed=1))
    x = stored_images(12, 8, seed=2)
    clean = model.predict(x)
    y = clean.clone()
    y[:4] = (clean[:4] + 1) % 3  # four images the model already gets wrong
    attack = SquareAttack(eps=16 / 255, queries=60)
    x_adv = attack(model, x, y)
    queries, success = attack.last_queries, attack.last_success
    assert queries.dtype == torch.long and queries.shape == (12,)
    assert queries[:4].tolist() == [1, 1, 1, 1]
    assert torch.equal(x_adv[:4], x[:4])  # on the grid already: returned as they are
    assert (queries >= 1).all() and (queries <= 60).all()
    assert torch.equal(success, model.predict(x_adv) != y)  # success is that of the returned images
    assert (queries[~success] == 60).all()  # the unfooled used their whole budget
    assert success[4:].any()


def test_targeted_reaches_the_target() -> None:
    model = classifier(Linear(64, 3, seed=3))
    x = stored_images(8, 8, seed=4)
    target = (model.predict(x) + 1) % 3
    attack = SquareAttack(eps=64 / 255, queries=200, targeted=True)
    x_adv = attack(model, x, target)
    pred = model.predict(x_adv)
    assert torch.equal(attack.last_success, pred == target)
    assert attack.last_success.float().mean() >= 0.5


def test_binary_margin_and_success_follow_the_threshold() -> None:
    objective = SquareObjective(OutputKind.BINARY, targeted=False, threshold_logit=0.0)
    loss, success = objective(torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 1, 0]))
    assert loss.tolist() == [2.0, -1.0, -0.5]
    assert success.tolist() == [False, True, True]
    model = classifier(Linear(64, 1, seed=5), kind="binary", classes=("neg", "pos"))
    x = stored_images(10, 8, seed=6)
    y = model.predict(x)
    attack = SquareAttack(eps=24 / 255, queries=150)
    x_adv = attack(model, x, y)
    assert torch.equal(attack.last_success, model.predict(x_adv) != y)
    assert attack.last_success.any()


def test_multilabel_flips_any_named_finding() -> None:
    objective = SquareObjective(OutputKind.MULTILABEL, targeted=False, finding_index=[0, 2])
    logits = torch.tensor([[2.0, -3.0, 1.0], [2.0, 3.0, -1.0]])
    y = torch.tensor([[1, 0, 1], [1, 0, 1]])
    loss, success = objective(logits, y)
    assert loss.tolist() == [1.0, -1.0]  # the named finding closest to flipping
    assert success.tolist() == [False, True]  # finding 1 (not named) is ignored

    classes = ("Effusion", "Nodule", "Mass")
    model = classifier(Linear(64, 3, seed=7), kind="multilabel", classes=classes)
    x = stored_images(8, 8, seed=8)
    y = model.predict(x)
    attack = SquareAttack(eps=24 / 255, queries=150, findings=["Nodule"])
    x_adv = attack(model, x, y)
    flipped = model.predict(x_adv)[:, 1] != y[:, 1]
    assert torch.equal(attack.last_success, flipped) and flipped.any()
    with pytest.raises(ValueError, match="not among the model's classes"):
        SquareAttack(findings=["Cardiomegaly"])(model, x, y)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 1000), eps_levels=st.integers(1, 16), quantize=st.booleans(),
       channels=st.sampled_from([1, 3]), queries=st.integers(1, 12))
def test_budget_range_shape_dtype_and_determinism(seed, eps_levels, quantize, channels, queries) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    contract = InputContract(classes=("a", "b", "c"), stored_channels=channels, network_channels=channels,
                             intensity="unit")
    model = Classifier(net, contract).eval()
    x = stored_images(4, 9, seed=seed, channels=channels)
    y = torch.randint(0, 3, (4,), generator=torch.Generator().manual_seed(seed))
    eps = eps_levels / 255
    make = lambda: SquareAttack(eps=eps, queries=queries, seed=seed, quantize_bits=8 if quantize else None)  # noqa: E731
    attack = make()
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert Budget(eps).contains(x_adv, x, tol=1e-6)
    assert (attack.last_queries >= 1).all() and (attack.last_queries <= queries).all()
    if quantize:
        assert torch.allclose(x_adv * 255, torch.round(x_adv * 255), atol=1e-4)
    assert torch.equal(x_adv, make()(model, x, y))


def test_seed_changes_the_search() -> None:
    model = classifier(Constant())
    x, y = stored_images(2, 8), torch.zeros(2, dtype=torch.long)
    a = SquareAttack(queries=5, seed=1)(model, x, y)
    b = SquareAttack(queries=5, seed=2)(model, x, y)
    assert not torch.equal(a, b)


def test_square_breaks_the_trained_small_cnn_within_its_budget(trained_small_cnn, phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    x, y = x[:45], y[:45]
    model = trained_small_cnn
    clean_acc = (model.predict(x) == y).float().mean().item()
    attack = SquareAttack(eps=EPS, queries=150)
    x_adv = attack(model, x, y)
    adv_acc = (model.predict(x_adv) == y).float().mean().item()
    assert clean_acc > 0.7
    assert adv_acc < clean_acc - 0.4  # about 0.83 -> 0.1 in this budget
    assert Budget(EPS).contains(x_adv, x, tol=1e-5)
    assert torch.equal(attack.last_success, model.predict(x_adv) != y)
    assert (attack.last_queries <= 150).all()
    # already misclassified images (judged on the 8-bit grid the attack works on) cost one query
    wrong = model.predict(torch.round(x * 255) / 255) != y
    assert wrong.any() and (attack.last_queries[wrong] == 1).all()
    assert attack.last_queries.float().mean() < 150  # most stop early


def test_square_runs_on_a_black_box_onnx_model_that_pgd_refuses(trained_small_cnn, phantom32, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from medrobust.models.loading import load_classifier

    path = tmp_path / "small_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trained_small_cnn.network.eval(), torch.zeros(1, 1, 32, 32), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    black_box = load_classifier(path, classes=trained_small_cnn.classes, input_size=32, network_channels=1,
                                intensity="unit")
    assert black_box.differentiable is False
    splits, _ = phantom32
    x, y = splits["test"][0][:20], splits["test"][1][:20]
    attack = SquareAttack(eps=EPS, queries=150)
    x_adv = attack(black_box, x, y)
    assert torch.equal(attack.last_success, black_box.predict(x_adv) != y)
    assert attack.last_success.float().mean() > (black_box.predict(x) != y).float().mean() + 0.4
    assert (attack.last_queries <= 150).all()
    # the same search as on the torch model (same seed; logits agree to ~1e-5)
    on_torch = SquareAttack(eps=EPS, queries=150)
    on_torch(trained_small_cnn, x, y)
    assert (on_torch.last_success == attack.last_success).float().mean() >= 0.9
    assert (on_torch.last_queries == attack.last_queries).float().mean() >= 0.9
    with pytest.raises(NotDifferentiableError, match="square"):
        build_attack("pgd")(black_box, x, y)


def test_windows_reach_every_pixel_including_the_last_row_and_column() -> None:
    attack = SquareAttack(eps=EPS)
    x = torch.full((200, 1, 5, 5), 128 / 255)
    best = x + EPS  # current perturbation +eps everywhere
    candidate = attack._window_candidates(x, best, 1, torch.Generator().manual_seed(0), attack._quantiser(x))
    changed = (candidate - best).abs() > 1e-6
    assert (changed.flatten(1).sum(1) == 1).all()  # exactly the 1 x 1 window, redrawn until it changes
    assert changed.any(dim=0).all()  # over 200 draws every pixel, corners included, was a window
