"""The attacks on a device: no host round trip inside a step, draws on the images' device.

The CPU tests play the GPU with :mod:`tests.host_sync` (device-resident stand-in tensors whose
host reads are recorded); the ``gpu`` tests run on a real CUDA device (skipped without one) and
count the synchronisations with ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
import torch.nn as nn

from medrobust.attacks import FGSM, MIFGSM, PGD, SIA, BlockShuffle, SquareAttack, sit_plan
from medrobust.attacks.sit import SITPlan, apply_structure_invariant_plan
from medrobust.models import build_classifier
from medrobust.models.batched_prediction import eval_mode
from medrobust.models.classifier import Classifier, InputContract

from ..host_sync import cuda_syncs, host_reads, on_device, on_host

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]
ALL_OPS = ("resize;vertical_shift;horizontal_shift;vertical_flip;horizontal_flip;rotate180;scale;add_noise;dct;"
           "dropout;identity;pixel_dropout")


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(scope="module")
def cnn() -> Classifier:
    torch.manual_seed(0)
    return build_classifier("small-cnn", CLASSES, 32).eval()


@pytest.fixture(scope="module")
def multilabel() -> Classifier:
    torch.manual_seed(1)
    contract = InputContract(classes=tuple(CLASSES), network_channels=1, intensity="unit", output_kind="multilabel")
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3)), contract).eval()


def batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(5)
    return torch.rand(n, 1, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)


def perturb(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The attack's loop alone (what runs between the input checks and the result), with a
    generator on the images' device."""
    with eval_mode(model), torch.enable_grad():
        return attack.perturb(model, x, y, gen(seed, x.device.type))


def test_the_guard_sees_host_reads() -> None:
    x = on_device(torch.rand(4, 4, generator=gen()))
    with host_reads() as reads:
        x.sum().item()
        bool((x > 0.5).any())
        x[x > 0.5]
        (x > 0.5).nonzero()
        torch.zeros(3)[[0, 2]]
        (x * 2).sum(dim=1)  # stays on the device: not a read
    assert len(reads) == 5, reads
    assert all("test_device_path.py" not in r for r in reads)  # only medrobust's lines are named


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3), PGD(eps=0.5, steps=3, norm="l2"), MIFGSM(steps=3),
                                    PGD(steps=2, targeted=True)], ids=["fgsm", "pgd", "pgd-l2", "mifgsm", "targeted"])
def test_gradient_attack_steps_read_nothing_back(cnn: Classifier, attack) -> None:
    x, y = batch()
    with host_reads() as reads:
        x_adv = perturb(attack, cnn, on_device(x), on_device(y))
    assert reads == []
    assert torch.equal(on_host(x_adv), perturb(attack, cnn, x, y))  # the stand-in changes no value


def test_multilabel_findings_step_reads_nothing_back(multilabel: Classifier) -> None:
    x, _ = batch()
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    attack = MIFGSM(steps=3, findings=["Pneumonia"])
    perturb(attack, multilabel, x, y)  # the findings mask is built once per device
    with host_reads() as reads:
        x_adv = perturb(attack, multilabel, on_device(x), on_device(y))
    assert reads == []
    assert torch.equal(on_host(x_adv), perturb(attack, multilabel, x, y))


def test_sia_reads_each_plan_back_once_and_the_copies_never(cnn: Classifier, monkeypatch) -> None:
    x, y = batch()
    reads_of_plans = []
    read = sit_plan.HostLayout.read.__func__

    def counted(cls, *tensors):
        reads_of_plans.append(tensors[0].shape)
        return read(cls, *tensors)

    monkeypatch.setattr(sit_plan.HostLayout, "read", classmethod(counted))
    attack = SIA(eps=8 / 255, steps=3, n_copies=5, copies_per_batch=2, ops=ALL_OPS)
    with host_reads() as reads:
        x_adv = perturb(attack, cnn, on_device(x), on_device(y))
    assert reads == []
    assert len(reads_of_plans) == 3  # one per step, however the copies are micro-batched
    assert torch.equal(on_host(x_adv), perturb(attack, cnn, x, y))


def _as_device_plan(plan: SITPlan) -> SITPlan:
    """``plan`` with its tensors device-resident, its per-row counts and host layout on the host."""
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    for key, value in fields.items():
        if isinstance(value, torch.Tensor) and key not in ("noise_count", "keep_pixel_count"):
            fields[key] = on_device(value)
    assert plan.host is not None
    fields["host"] = dataclasses.replace(plan.host, of=(fields["row_bounds"], fields["col_bounds"], fields["choice"]))
    return SITPlan(**fields)


@pytest.mark.parametrize("channels", [1, 3])
def test_sit_copies_and_gradient_read_only_the_host_layout(channels: int) -> None:
    x = torch.rand(2, channels, 24, 20, generator=gen(1))
    plan = SITPlan.sample(x.shape, 4, 3, ALL_OPS, gen(2))
    weights = torch.rand(6 * 2, channels, 24, 20, generator=gen(3))
    expected = apply_structure_invariant_plan(x.requires_grad_(True), plan.copies(1, 4))
    (expected_grad,) = torch.autograd.grad((expected * weights[:6]).sum(), x)
    x_dev = on_device(x.detach()).requires_grad_(True)
    with host_reads() as reads:
        out = apply_structure_invariant_plan(x_dev, _as_device_plan(plan).copies(1, 4))
        (grad,) = torch.autograd.grad((out * on_device(weights[:6])).sum(), x_dev)
    assert reads == []
    assert torch.equal(on_host(out), expected.detach()) and torch.equal(on_host(grad), expected_grad)


def test_a_plan_rebuilt_with_other_choices_reads_them_again() -> None:
    x = torch.rand(2, 1, 12, 12, generator=gen(2))
    plan = SITPlan.sample(x.shape, 2, 3, ["identity", "dct", "add_noise"], gen(1))
    assert plan.layout() is plan.host
    rebuilt = SITPlan(**{**plan.__dict__, "choice": torch.zeros_like(plan.choice)})  # every block: identity
    assert rebuilt.layout() is not plan.host and int(rebuilt.layout().choice.abs().sum()) == 0
    assert torch.equal(apply_structure_invariant_plan(x, rebuilt), x.repeat(2, 1, 1, 1))


def test_square_reads_back_only_which_images_still_search(cnn: Classifier, multilabel: Classifier) -> None:
    x, _ = batch(4)
    for model, y, attack in ((cnn, cnn(x).argmax(1), SquareAttack(queries=25)),
                             (multilabel, torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]),
                              SquareAttack(queries=25, findings=["Normal", "Pneumonia"]))):
        with torch.no_grad(), host_reads() as reads:
            x_adv = attack.perturb(model, on_device(x), on_device(y), gen())
        assert reads[-1].startswith("cpu ")  # the results, once, at the end
        assert all(r.startswith("nonzero ") for r in reads[:-1]), reads
        with torch.no_grad():
            assert torch.equal(on_host(x_adv), attack.perturb(model, x, y, gen()))


def test_a_generator_on_another_device_is_refused_clearly(cnn: Classifier) -> None:
    x, y = batch()
    elsewhere = types.SimpleNamespace(device=torch.device("cuda", 0))  # only its device is looked at
    for attack in (PGD(steps=1), SIA(steps=1, n_copies=2), SquareAttack(queries=3)):
        with pytest.raises(ValueError, match=r"generator is on cuda:0 but the images are on cpu.*make_generator"):
            attack(cnn, x, y, generator=elsewhere)


# --- on a CUDA device --------------------------------------------------------------------------

@pytest.fixture
def full_fp32():
    """Full float32 convolutions and products on the GPU (PyTorch lets cuDNN use TF32 by default),
    so that a comparison with the CPU measures the code, not the precision mode."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture
def count_syncs():
    """``count_syncs(fn)``: run ``fn`` with CUDA's synchronisation warnings on; returns (result, n)."""
    return cuda_syncs


@pytest.mark.gpu
@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=3), PGD(eps=0.5, steps=3, norm="l2"), MIFGSM(steps=3)],
                         ids=["fgsm", "pgd", "pgd-l2", "mifgsm"])
def test_gradient_attacks_on_cuda_never_synchronise_in_a_step(cnn: Classifier, attack, count_syncs) -> None:
    x, y = batch()
    net = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    xc, yc = x.cuda(), y.cuda()
    perturb(attack, net, xc, yc)  # warm-up: kernels chosen, caches filled
    x_adv, syncs = count_syncs(lambda: perturb(attack, net, xc, yc))
    assert syncs == 0
    assert x_adv.device.type == "cuda" and attack.budget.contains(x_adv, xc)


@pytest.mark.gpu
def test_deterministic_attacks_on_cuda_match_the_cpu(full_fp32) -> None:
    x, y = batch()
    net = build_classifier("small-cnn", CLASSES, 32).eval()
    net_cuda = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    net_cuda.load_state_dict(net.state_dict())
    for attack in (FGSM(), MIFGSM(steps=3)):  # no random draws: only the arithmetic differs
        cpu, cuda = attack(net, x, y), attack(net_cuda, x.cuda(), y.cuda())
        assert cuda.device.type == "cuda"
        same = (cuda.cpu() == cpu).float().mean()
        assert same > 0.98, f"{attack.name}: only {same:.3f} of the pixels agree with the CPU"
        assert (cuda.cpu() - cpu).abs().max() <= 2 * attack.eps + 1e-6


@pytest.mark.gpu
def test_sia_on_cuda_synchronises_once_per_step(count_syncs) -> None:
    x, y = batch()
    net = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    attack = SIA(eps=8 / 255, steps=3, n_copies=6, copies_per_batch=4, ops=ALL_OPS)
    xc, yc = x.cuda(), y.cuda()
    perturb(attack, net, xc, yc)  # warm-up: the block maps are built once per size and device
    x_adv, syncs = count_syncs(lambda: perturb(attack, net, xc, yc))
    assert syncs <= attack.steps  # the plan's layout, read back when drawn
    assert x_adv.device.type == "cuda" and attack.budget.contains(x_adv, xc)
    # the same seed, the same draws; the gradient's sums (index_add_ and cuDNN's backward use
    # atomics) may still differ in the last bit between runs and flip a near-zero sign
    again = perturb(attack, net, xc, yc)
    assert (again == x_adv).float().mean() > 0.99


@pytest.mark.gpu
def test_every_attack_returns_on_cuda_within_its_budget() -> None:
    x, y = batch()
    net = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    xc, yc = x.cuda(), y.cuda()
    for attack in (FGSM(), PGD(steps=2), MIFGSM(steps=2), SIA(eps=8 / 255, steps=2, n_copies=3), SquareAttack(queries=20)):
        x_adv = attack(net, xc, yc)
        assert x_adv.device == xc.device and x_adv.dtype == xc.dtype
        assert attack.budget.contains(x_adv, xc), attack.name
    shuffled = BlockShuffle(distort_prob=0.5)(net, xc, yc)
    assert shuffled.device == xc.device


@pytest.mark.gpu
def test_the_same_plan_gives_the_same_copies_on_cuda_and_cpu() -> None:
    x = torch.rand(2, 3, 24, 20, generator=gen(1))
    plan = SITPlan.sample(x.shape, 4, 3, ALL_OPS, gen(2))
    cpu = apply_structure_invariant_plan(x, plan)
    cuda = apply_structure_invariant_plan(x.cuda(), plan.to("cuda"))
    assert cuda.device.type == "cuda" and torch.allclose(cuda.cpu(), cpu, atol=1e-5)
    drawn = SITPlan.sample(x.shape, 4, 3, ALL_OPS, gen(2, "cuda"))  # drawn on the GPU
    assert drawn.choice.device.type == "cuda" and drawn.host is not None and drawn.host.choice.device.type == "cpu"
    assert apply_structure_invariant_plan(x.cuda(), drawn).device.type == "cuda"
