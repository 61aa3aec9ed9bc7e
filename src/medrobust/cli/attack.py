"""`medrobust attack`: craft adversarial images for a model (white-box, or transferred from a
surrogate), write them as 8-bit PNGs with a per-image CSV and a summary."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from medrobust.cli.app import (
    ArchOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    TrustPickleOption,
    app,
    console,
    err_console,
    load_cli_model,
    progress_bar,
    user_errors,
)


@app.command("attack")
@user_errors
def attack(
    model_path: Annotated[Path, typer.Option("--model", help="The target model (checkpoint, TorchScript, .keras, .onnx...).")],
    data: Annotated[str, typer.Option("--data", help="phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz")],
    attack_name: Annotated[str, typer.Option("--attack", help="fgsm | pgd | mifgsm | sia | square | block-shuffle")] = "sia",
    eps: Annotated[Optional[str], typer.Option("--eps", help="Budget, e.g. 8/255 (the attack's default if omitted).")] = None,
    surrogate: Annotated[Optional[Path], typer.Option("--surrogate", help="Craft on this model, evaluate on --model.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Attack parameter key=value (repeatable).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for PNGs, attack.csv, summary.json.")] = Path("runs/attack"),
    split: Annotated[str, typer.Option("--split", help="Which split to attack (train | val | test | all).")] = "test",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Attack at most this many images.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Image size when the model does not fix one.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Phantom images per class.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    classes: ClassesOption = None,
    input_size: InputSizeOption = None,
    intensity: IntensityOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    normal_class: Annotated[Optional[str], typer.Option(
        "--normal-class", help="The class meaning 'nothing found' (found by name when left out).")] = None,
    class_map: Annotated[Optional[list[str]], typer.Option(
        "--class-map", help="FOLDER=CLASS: a data class is this model class (repeatable).")] = None,
    allow_large_eps: Annotated[bool, typer.Option(
        "--allow-large-eps", help="Allow L-inf budgets above 64/255 (visibly another image).")] = False,
) -> None:
    """Attack a model on a dataset and write adversarial PNGs, attack.csv and summary.json."""
    import numpy as np
    import torch

    from medrobust.attacks.registry import build_attack
    from medrobust.cli.evaluate import parse_class_map
    from medrobust.data.class_names import NOT_ASSESSED_NO_NORMAL, find_classes, find_normal_class, match_classes
    from medrobust.data.io import write_png
    from medrobust.data.similarity import l2_distance, linf_distance, psnr, ssim
    from medrobust.data.sources import open_dataset
    from medrobust.evaluation.attack_success import attack_success
    from medrobust.evaluation.classification import dangerous_flips

    target = load_cli_model(model_path, classes, input_size, intensity, output_kind, arch, trust_pickle)
    crafter = load_cli_model(surrogate) if surrogate else target
    if crafter.classes != target.classes:
        raise ValueError(f"{surrogate}: surrogate classes {crafter.classes} differ from the target's {target.classes}")
    params: dict[str, str] = {}
    for item in param or []:
        if "=" not in item:
            raise ValueError(f"--param {item!r} must look like key=value")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = value.strip()
    if eps is not None:
        params["eps"] = eps
    params.setdefault("seed", str(seed))
    atk = build_attack(attack_name, allow_large_eps=allow_large_eps, **params)

    image_size = size or (target.input_size[0] if target.input_size else 64)
    dataset = open_dataset(data, size=image_size, per_class=per_class, seed=seed)
    label_map = match_classes(dataset.classes, target.classes, parse_class_map(class_map or []))
    normal = find_normal_class(target.classes, normal_class)
    emergency = find_classes(["pneumothorax"], target.classes)
    part = dataset if split == "all" else dataset.splits().get(split)
    if part is None:
        raise ValueError(f"{data}: no {split!r} split; use --split all")
    n_total = min(len(part), limit) if limit else len(part)

    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    y_all, clean_all, adv_all = [], [], []
    start = time.perf_counter()
    generator_seed = seed
    with progress_bar() as bar:
        task = bar.add_task(f"{attack_name}", total=n_total)
        done = 0
        for x, y, ids in part.batches(batch_size):
            if done >= n_total:
                break
            x, y, ids = x[: n_total - done], y[: n_total - done], ids[: n_total - done]
            y = torch.from_numpy(label_map[y.numpy()])
            x_adv = atk(crafter, x, y, generator=atk.make_generator(x.device, generator_seed + done))
            p_clean = target.predict_proba(x)
            p_adv = target.predict_proba(x_adv)
            pred_clean, pred_adv = p_clean.argmax(1), p_adv.argmax(1)
            xn, an = x.numpy(), x_adv.numpy()
            metrics = {"linf": linf_distance(xn, an), "l2": l2_distance(xn, an), "ssim": ssim(xn, an), "psnr": psnr(xn, an)}
            for i, item_id in enumerate(ids):
                name = f"{Path(item_id).with_suffix('').as_posix().replace('/', '__')}.png"
                write_png(out / "images" / name, x_adv[i])
                rows.append({
                    "id": item_id, "file": f"images/{name}", "true": target.classes[int(y[i])],
                    "pred_clean": target.classes[int(pred_clean[i])], "conf_clean": round(float(p_clean[i].max()), 4),
                    "pred_adv": target.classes[int(pred_adv[i])], "conf_adv": round(float(p_adv[i].max()), 4),
                    "flipped": int(pred_clean[i] != pred_adv[i]),
                    **{k: round(float(v[i]), 6) for k, v in metrics.items()},
                })
            y_all.append(y.numpy())
            clean_all.append(pred_clean.numpy())
            adv_all.append(pred_adv.numpy())
            done += len(ids)
            bar.update(task, completed=done)
    seconds = time.perf_counter() - start
    if not rows:
        raise ValueError(f"{data}: no readable images in the {split!r} split")
    with open(out / "attack.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    y_cat, clean_cat, adv_cat = np.concatenate(y_all), np.concatenate(clean_all), np.concatenate(adv_all)
    success = attack_success(y_cat, clean_cat, adv_cat)
    flips = dangerous_flips(y_cat, clean_cat, adv_cat, target.classes, normal, emergency)
    summary = {
        "attack": atk.describe(),
        "target": str(model_path), "surrogate": str(surrogate) if surrogate else None, "data": data, "split": split,
        **success.to_json(),
        "mean_linf": float(np.mean([r["linf"] for r in rows])), "mean_l2": float(np.mean([r["l2"] for r in rows])),
        "mean_ssim": float(np.mean([r["ssim"] for r in rows])),
        "mean_psnr_db": (float(np.mean(finite_psnr)) if (finite_psnr := [r["psnr"] for r in rows
                                                                         if np.isfinite(r["psnr"])]) else None),
        "seconds_per_image": seconds / len(rows),
        "normal_class": target.classes[normal] if normal is not None else None,
        "dangerous_flips": None if flips is None else [f.model_dump() for f in flips],
        "skipped": list(dict.fromkeys(str(s) for s in [*dataset.skipped, *part.skipped])),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str, allow_nan=False) + "\n")
    table = Table(title=f"{attack_name} on {model_path.name}" + (f" (crafted on {surrogate.name})" if surrogate else ""))
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in [
        ("images", f"{success.n_images}"),
        ("accuracy clean -> adversarial", f"{success.clean_accuracy:.1%} -> {success.adversarial_accuracy:.1%}"),
        ("success rate (all images)", f"{success.success_rate_all:.1%}"),
        ("success rate (correct before)", "not defined (0 correctly classified images)"
         if success.success_rate_correct is None else f"{success.success_rate_correct:.1%}"),
        ("dangerous flips (finding -> normal)", "not assessed (see below)" if flips is None else
         "; ".join(f"{f.count} {f.true_class}" + (" EMERGENCY" if f.emergency and f.count else "") for f in flips)
         or "none"),
        ("mean L-inf (grey levels)", f"{summary['mean_linf'] * 255:.1f}"),
        ("mean SSIM", f"{summary['mean_ssim']:.3f}"),
        ("mean PSNR (dB)", "inf (unchanged)" if summary["mean_psnr_db"] is None else f"{summary['mean_psnr_db']:.1f}"),
        ("seconds per image", f"{summary['seconds_per_image']:.3f}"),
    ]:
        table.add_row(label, value)
    console.print(table)
    if flips is None:
        console.print(NOT_ASSESSED_NO_NORMAL.replace("data.normal_class", "--normal-class"), markup=False,
                      highlight=False)
    console.print(f"wrote {len(rows)} adversarial images, {out / 'attack.csv'} and {out / 'summary.json'}")
    if summary["skipped"]:
        err_console.print(f"{len(summary['skipped'])} file(s) skipped:", markup=False, highlight=False)
        for line in summary["skipped"]:
            err_console.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(code=3)
