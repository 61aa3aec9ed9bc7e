"""Benchmark SIA: our vectorised Structure Invariant Attack against a re-implementation of the
reference code's loops, and against the eager model's lower bound. Prints JSON (and writes it
with --out); timings are only compared as ratios measured in the same run.

    python benchmarks/bench_sia.py [--sizes 64 224] [--steps 10] [--batch 4] [--copies 20] [--out r.json]

Each attack configuration runs ``--repeats`` times in interleaved rounds and the best time
is kept; on a shared CPU pass ``--threads 1`` (oversubscribed OpenMP threads stall at barriers
and can slow one configuration tenfold, which is noise, not a result).

Measured per input size, on one ``densenet121`` Classifier (random init, eval mode), one batch:

- ``sit``: building the N SIT copies alone, ours (vectorised) vs the reference loop;
  ``sit_with_gradient``: the same plus the gradient back to the images (what an attack step pays);
- ``step``: one gradient step of each (ours, reference, bound), median of interleaved rounds
  (the order rotates from round to round: what runs just before a configuration changes its time);
- ``attack.ours``: :class:`medrobust.attacks.sia.SIA` (T steps, N copies);
- ``attack.reference``: the reference algorithm as the authors' code runs it (REFERENCE
  RE-IMPLEMENTATION below: one draw of cut points per batch, a Python loop over blocks, each
  copy built in a Python loop, one batched forward/backward per step);
- ``attack.bound``: T x (forward + backward of the eager model on N x B images), no SIT at all;
- ``variants``: ours with a channels_last model, a ``torch.compile``-d model (failures recorded)
  and bfloat16 autocast (opt-in: it changes the numerics; the difference to float32 is reported).

``--tuned-malloc`` re-runs the process with glibc's mmap threshold raised, as the ``medrobust``
command does (:mod:`medrobust.launch`): on CPU at 224 px the default allocator's page faults
take more than half of a step and vary from run to run. ``malloc_mmap_threshold`` in the JSON
records the setting a run had; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medrobust.attacks.sia import SIA
from medrobust.attacks.sit import structure_invariant_copies
from medrobust.launch import MMAP_THRESHOLD_VARIABLE, reexec_with_tuned_malloc
from medrobust.models.zoo import build_classifier

EPS = 16 / 255


# --- REFERENCE RE-IMPLEMENTATION (for timing only) ---------------------------------------------
# Written after the authors' code (github.com/xiaosen-wang/SIT, attack.py; TransferAttack's
# input_transformation/sia.py): cut points and per-block operations are drawn once per call for
# the whole batch with NumPy, each block is transformed by slicing the batch, copies are made
# one by one and concatenated. torch_dct is replaced by an explicit DCT matrix.
class ReferenceSIT:
    """The reference block transform, op for op (10 operations of the authors' code)."""

    def __init__(self, num_block: int = 3, seed: int = 0) -> None:
        self.num_block = num_block
        self.rng = np.random.RandomState(seed)
        self.op = [self.resize, self.vertical_shift, self.horizontal_shift, self.vertical_flip,
                   self.horizontal_flip, self.rotate180, self.scale, self.add_noise, self.dct, self.drop_out]

    def vertical_shift(self, x: torch.Tensor) -> torch.Tensor:
        return x.roll(int(self.rng.randint(0, x.shape[2])), dims=2)

    def horizontal_shift(self, x: torch.Tensor) -> torch.Tensor:
        return x.roll(int(self.rng.randint(0, x.shape[3])), dims=3)

    def vertical_flip(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(dims=(2,))

    def horizontal_flip(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(dims=(3,))

    def rotate180(self, x: torch.Tensor) -> torch.Tensor:
        return x.rot90(k=2, dims=(2, 3))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand(1, device=x.device)[0] * x

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        small = F.interpolate(x, size=(int(h * 0.8) + 1, int(w * 0.8) + 1), mode="bilinear", align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)

    @staticmethod
    def _dct_matrix(n: int, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(n, device=x.device, dtype=x.dtype)
        d = torch.cos(math.pi * (2 * t + 1) * t.unsqueeze(1) / (2 * n)) * math.sqrt(2.0 / n)
        d[0] /= math.sqrt(2.0)
        return d

    def dct(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        dh, dw = self._dct_matrix(h, x), self._dct_matrix(w, x)
        coef = dh @ x @ dw.T
        low_h, low_w = int(h * 0.4), int(w * 0.4)
        coef[:, :, -low_h:, :] = 0  # as the reference (with low = 0 this clears everything)
        coef[:, :, :, -low_w:] = 0
        return dh.T @ coef @ dw

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(x + torch.zeros_like(x).uniform_(-16 / 255, 16 / 255), 0, 1)

    def drop_out(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, p=0.1, training=True)

    def blocktransform(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        rows = sorted([0, *self.rng.choice(list(range(1, h)), self.num_block - 1, replace=False).tolist(), h])
        cols = sorted([0, *self.rng.choice(list(range(1, w)), self.num_block - 1, replace=False).tolist(), w])
        out = x.clone()
        for i in range(self.num_block):
            for j in range(self.num_block):
                chosen = self.rng.randint(0, len(self.op))
                block = out[:, :, rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
                out[:, :, rows[i]:rows[i + 1], cols[j]:cols[j + 1]] = self.op[chosen](block)
        return out

    def copies(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([self.blocktransform(x) for _ in range(n)])


def reference_sia(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, n_copies: int,
                  blocks: int = 3, eps: float = EPS, mu: float = 1.0) -> torch.Tensor:
    """The reference MI-FGSM loop with SIT copies (delta parametrisation, mean CE loss)."""
    sit = ReferenceSIT(blocks)
    alpha = eps / steps
    delta = torch.zeros_like(x, requires_grad=True)
    momentum = torch.zeros_like(x)
    for _ in range(steps):
        logits = model(sit.copies(x + delta, n_copies))
        loss = F.cross_entropy(logits, y.repeat(n_copies))
        (grad,) = torch.autograd.grad(loss, delta)
        momentum = mu * momentum + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        delta = torch.clamp(delta + alpha * momentum.sign(), -eps, eps)
        delta = (torch.clamp(x + delta, 0, 1) - x).detach().requires_grad_(True)
    return (x + delta).detach()
# --- end of the reference re-implementation ------------------------------------------------------


def lower_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, n_copies: int) -> None:
    """T x (forward + backward of the model on N x B images): what any SIA must at least pay."""
    batch = x.repeat(n_copies, 1, 1, 1)
    target = y.repeat(n_copies)
    for _ in range(steps):
        xv = batch.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xv), target, reduction="sum")
        torch.autograd.grad(loss, xv)


def one_step_medians(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: SIA, n_copies: int,
                     repeats: int, device: torch.device) -> dict[str, float]:
    """Median time of one gradient step (copies, forward, backward to the images) of ours, of the
    reference and of the bound, timed in turn ``repeats`` times: a finer view than whole attacks,
    whose run-to-run spread on a shared CPU exceeds the SIT's share of a step."""
    gen = torch.Generator(device=device).manual_seed(0)
    sit = ReferenceSIT(3)

    def reference_step() -> None:
        delta = torch.zeros_like(x, requires_grad=True)
        loss = F.cross_entropy(model(sit.copies(x + delta, n_copies)), y.repeat(n_copies))
        torch.autograd.grad(loss, delta)

    steps = {"ours": lambda: attack.gradient(model, x, y, gen), "reference": reference_step,
             "bound": lambda: lower_bound(model, x, y, 1, n_copies)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        timed(fn, device)
    names = list(steps)
    for k in range(repeats):  # each round starts with the next one: no configuration always follows another
        for name in names[k % len(names):] + names[:k % len(names)]:
            times[name].append(timed(steps[name], device)[0])
    med = {f"{name}_s": float(np.median(t)) for name, t in times.items()}
    return {**med, "ours_over_reference": med["ours_s"] / med["reference_s"],
            "ours_over_bound": med["ours_s"] / med["bound_s"]}


class Autocast(nn.Module):
    """Runs the wrapped classifier under bfloat16 autocast and returns float32 logits."""

    def __init__(self, model: nn.Module, device_type: str) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.output_kind = getattr(model, "output_kind", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = math.inf, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, result


def bench_size(size: int, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    torch.manual_seed(args.seed)
    model = build_classifier(args.arch, ["Normal", "Pneumonia", "Pneumothorax"], size).eval().to(device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 1, size, size, generator=g).to(device)
    y = torch.randint(0, 3, (args.batch,), generator=g).to(device)
    n, steps = args.copies, args.steps
    out: dict[str, object] = {"size": size, "batch": args.batch, "copies": n, "steps": steps}

    gen = torch.Generator(device=device).manual_seed(0)
    ref_sit = ReferenceSIT(3)
    timed(lambda: structure_invariant_copies(x, n, 3, args.ops, gen), device)  # warm-up
    sit_best = {"ours_s": math.inf, "reference_s": math.inf}
    for _ in range(args.sit_repeats):  # interleaved, best of each
        sit_best["ours_s"] = min(sit_best["ours_s"], timed(lambda: structure_invariant_copies(x, n, 3, args.ops, gen),
                                                            device)[0])
        sit_best["reference_s"] = min(sit_best["reference_s"], timed(lambda: ref_sit.copies(x, n), device)[0])
    out["sit"] = {**sit_best, "ours_over_reference": sit_best["ours_s"] / sit_best["reference_s"]}

    def with_gradient(build: Callable[[torch.Tensor], torch.Tensor]) -> None:
        xv = x.clone().requires_grad_(True)
        copies = build(xv)
        torch.autograd.grad(copies, xv, torch.ones_like(copies))

    ours_fb = lambda: with_gradient(lambda t: structure_invariant_copies(t, n, 3, args.ops, gen))  # noqa: E731
    ref_fb = lambda: with_gradient(lambda t: ref_sit.copies(t, n))  # noqa: E731
    ours_fb(), ref_fb()  # warm-up
    fb_best = {"ours_s": math.inf, "reference_s": math.inf}
    for _ in range(args.sit_repeats):
        fb_best["ours_s"] = min(fb_best["ours_s"], timed(ours_fb, device)[0])
        fb_best["reference_s"] = min(fb_best["reference_s"], timed(ref_fb, device)[0])
    out["sit_with_gradient"] = {**fb_best, "ours_over_reference": fb_best["ours_s"] / fb_best["reference_s"]}

    attack = SIA(eps=EPS, steps=steps, n_copies=n, ops=args.ops, copies_per_batch=args.copies_per_batch)
    if args.step_repeats:
        out["step"] = one_step_medians(model, x, y, attack, n, args.step_repeats, device)
    configs: dict[str, Callable[[], object]] = {
        "ours": lambda: attack(model, x, y),
        "reference": lambda: reference_sia(model, x, y, steps, n),
        "bound": lambda: lower_bound(model, x, y, steps, n),
    }
    notes: dict[str, dict[str, object]] = {}
    lower_bound(model, x, y, 1, n)  # warm-up the kernels for this batch size
    if "channels_last" in args.variants:
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        lower_bound(cl, x, y, 1, n)
        configs["channels_last"] = lambda: attack(cl, x, y)
    if "compile" in args.variants:
        try:
            compiled = torch.compile(copy.deepcopy(model))
            first, _ = timed(lambda: lower_bound(compiled, x, y, 1, n), device)
            configs["compile"] = lambda: attack(compiled, x, y)
            notes["compile"] = {"first_call_s": first}
        except Exception as err:  # noqa: BLE001 - any backend failure is a result to record
            notes["compile"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    if "bf16" in args.variants:
        amp = Autocast(model, device.type).eval()
        lower_bound(amp, x, y, 1, n)
        configs["bf16_autocast"] = lambda: attack(amp, x, y)
        notes["bf16_autocast"] = {"note": "changes numerics: the adversarial image differs from float32"}

    best = {name: math.inf for name in configs}
    results: dict[str, object] = {}
    for k in range(args.repeats):  # interleaved rounds, so drifting machine load hits all alike, each
        names = list(configs)  # starting with the next configuration (none always runs after another)
        for name in names[k % len(names):] + names[:k % len(names)]:
            fn = configs[name]
            try:
                t, result = timed(fn, device)
            except Exception as err:  # noqa: BLE001 - e.g. a compiled graph failing at run time
                notes.setdefault(name, {})["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                configs.pop(name)
                continue
            best[name] = min(best[name], t)
            results[name] = result
    t_ours, t_ref, t_bound = best["ours"], best["reference"], best["bound"]
    out["attack"] = {"ours_s": t_ours, "reference_s": t_ref, "bound_s": t_bound,
                     "ours_over_reference": t_ours / t_ref, "ours_over_bound": t_ours / t_bound,
                     "reference_over_bound": t_ref / t_bound}
    variants: dict[str, object] = {}
    for name in ("channels_last", "compile", "bf16_autocast"):
        if name in best and math.isfinite(best[name]):
            variants[name] = {"ours_s": best[name], "over_eager_ours": best[name] / t_ours, **notes.get(name, {})}
        elif name in notes:
            variants[name] = notes[name]
    if "bf16_autocast" in results:
        diff = (results["bf16_autocast"] - results["ours"]).abs()  # type: ignore[operator]
        variants["bf16_autocast"].update(pixels_differing=float((diff > 0).float().mean()),  # type: ignore[union-attr]
                                         max_abs_diff_grey_levels=float(diff.max() * 255))
    out["variants"] = variants
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="input sizes (e.g. 64 224)")
    parser.add_argument("--steps", type=int, default=10, help="iterations T (fewer for speed at 224)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--copies", type=int, default=20, help="SIT copies N")
    parser.add_argument("--copies-per-batch", type=int, default=None, help="our micro-batch size in copies")
    parser.add_argument("--ops", default="paper", help="SIT operations of our SIA (the reference uses the paper's 10)")
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--variants", nargs="*", default=["channels_last", "compile", "bf16"],
                        choices=["channels_last", "compile", "bf16"])
    parser.add_argument("--sit-repeats", type=int, default=5, help="repeats of the SIT-only timing (best kept)")
    parser.add_argument("--step-repeats", type=int, default=10,
                        help="interleaved rounds of the one-step timing (median kept; 0 skips it)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the attack timings (best kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 avoids OpenMP stalls on a shared, oversubscribed machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--tuned-malloc", action="store_true",
                        help="re-run with glibc's mmap threshold raised, as the medrobust command runs")
    args = parser.parse_args(argv)
    if args.tuned_malloc:
        reexec_with_tuned_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    result: dict[str, object] = {
        "benchmark": "sia", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "arch": args.arch, "ops": args.ops,
        "malloc_mmap_threshold": os.environ.get(MMAP_THRESHOLD_VARIABLE, "glibc default"),
        "sizes": [bench_size(size, args, device) for size in args.sizes],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
