"""`medrobust attack`: craft adversarial images for a model (white-box, or transferred from a
surrogate), write them as 8-bit PNGs (CT volumes: DICOM series or NIfTI in HU, as they were read) with a
per-image CSV and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from medrobust.cli.app import (
    ArchOption,
    ChannelsLastOption,
    ChannelsOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    OutputsOption,
    TrustPickleOption,
    WindowOption,
    app,
    console,
    contract_from_options,
    print_skipped,
    user_errors,
)
from medrobust.cli.progress import CliProgress


def _attack_interrupted_line(options: dict[str, object]) -> str:
    return (f"medrobust attack does not resume; the images written so far stay in {options.get('--out')}: run the "
            "command again to attack every image")


@app.command("attack")
@user_errors(on_interrupt=_attack_interrupted_line)
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
    channels: ChannelsOption = None,
    intensity: IntensityOption = None,
    window: WindowOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    outputs: OutputsOption = None,
    channels_last: ChannelsLastOption = None,
    normal_class: Annotated[Optional[str], typer.Option(
        "--normal-class", help="The class meaning 'nothing found' (found by name when left out).")] = None,
    class_map: Annotated[Optional[list[str]], typer.Option(
        "--class-map", help="FOLDER=CLASS: a data class is this model class (repeatable).")] = None,
    allow_large_eps: Annotated[bool, typer.Option(
        "--allow-large-eps", help="Allow L-inf budgets above 64/255 (visibly another image).")] = False,
) -> None:
    """Attack a model on a dataset and write adversarial PNGs (at the images' relative paths under
    --out; CT volumes as DICOM series or NIfTI in HU, as they were read), attack.csv and summary.json."""
    import medrobust as mr
    from medrobust.cli.option_values import parse_class_map
    from medrobust.layer.attack import attack_to_run

    params: dict[str, str] = {}
    for item in param or []:
        if "=" not in item:
            raise ValueError(f"--param {item!r} must look like key=value")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = value.strip()
    if eps is not None:
        params["eps"] = eps
    attack_to_run(attack_name, seed=seed, allow_large_eps=allow_large_eps, **params)  # before loading the models
    contract = contract_from_options(model_path, classes, input_size, channels, intensity, output_kind, arch,
                                     trust_pickle, outputs, channels_last, window)
    with CliProgress() as progress:
        result = mr.attack(str(model_path), data, attack_name, str(surrogate) if surrogate else None, seed=seed,
                           batch_size=batch_size, limit=limit, split=split, size=size, per_class=per_class,
                           class_map=parse_class_map(class_map or []), normal_class=normal_class,
                           allow_large_eps=allow_large_eps, out=out, progress=progress, contract=contract, **params)
    _print_table(result, attack_name, model_path, surrogate)
    console.print(f"wrote {len(result.ids)} adversarial images under {out} (same relative paths as the data), "
                  f"{out / 'attack.csv'} and {out / 'summary.json'}", highlight=False)
    if result.skipped:
        print_skipped(result.skipped)
        raise typer.Exit(code=3)


def _print_table(result, attack_name: str, model_path: Path, surrogate: Optional[Path]) -> None:
    success = result.success
    flips = result.dangerous_flips
    psnr = result.mean("psnr")
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
        (f"mean L-inf ({result.grid.unit})", f"{result.grid.eps_in_units(result.mean('linf') or 0.0):.1f}"),
        ("mean SSIM", f"{result.mean('ssim'):.3f}"),
        ("mean PSNR (dB)", "inf (unchanged)" if psnr is None else f"{psnr:.1f}"),
        ("seconds per image", f"{result.seconds / len(result.ids):.3f}"),
    ]:
        table.add_row(label, value)
    console.print(table)
    if flips is None:
        console.print("dangerous flips not assessed: no class is named as normal (set --normal-class)", markup=False,
                      highlight=False)
