"""Hostile configurations and model contracts end in one line per problem (exit status 2) before
any image is read or any file written: a seed numpy and torch cannot take, NaN in a parameter,
a NUL in a path, an input size of 0, a model file without its intensity, a damaged checkpoint;
pydantic's reports read one line per setting, with no error codes and no links."""

from __future__ import annotations

import struct

import pytest
import torch
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

import medrobust as mr
from medrobust.cli import app
from medrobust.cli.app import user_errors
from medrobust.data.io import write_png
from medrobust.models import build_classifier, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")

runner = CliRunner()
CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


@pytest.fixture
def images(tmp_path):
    for name in CLASSES:
        write_png(tmp_path / "images" / name / "a.png", torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(3)))
    return tmp_path / "images"


@pytest.fixture
def torchscript(tmp_path):
    path = tmp_path / "model.pt"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3))
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return path


@pytest.fixture
def no_image_is_read(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("an image was read before the error")

    monkeypatch.setattr("medrobust.data.io.read_image", refused)


def _config(tmp_path, images, torchscript, extra: str) -> tuple:
    path = tmp_path / "run.yaml"
    out = tmp_path / "runs"
    path.write_text(f"name: hostile\noutput_dir: {out}\ndata: {{source: {images}, size: 16}}\n"
                    f"model: {{load: {{path: {torchscript}, classes: [{', '.join(CLASSES)}], intensity: unit}}}}\n"
                    "defenses: []\ndetectors: {reference: {enabled: false}, squeeze: {enabled: false}}\n" + extra)
    return path, out


def _one_line_error(result) -> str:
    """The one error line (log lines of the listing may come before it), with no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    return errors[0]


@pytest.mark.parametrize(("extra", "says"), [
    ("seed: 1208925819614629174706176\n",
     "invalid configuration: seed: 1208925819614629174706176 is not a seed: give a whole number from 0 to "
     "4,294,967,295 (2**32 - 1)"),
    ("attacks: [{name: fgsm, params: {eps: .nan}}]\n",
     "invalid configuration: attacks[0].params: eps is nan, not a finite number; write e.g. 8/255 or 0.03"),
    ("attacks: [{name: pgd, params: {eps: 8/255, seed: -1}}]\n",
     "attacks[0] (pgd): attack pgd: parameter seed -1 is not a seed: give a whole number from 0 to 4,294,967,295"),
    ("adaptive: {masking_eps: .inf}\n", "invalid configuration: adaptive.masking_eps: input should be a finite number (got inf)"),
    ("data: {phantom_seed: 99999999999}\n", "data.phantom_seed: 99999999999 is not a seed"),
])
def test_hostile_values_are_one_line_and_write_nothing(tmp_path, images, torchscript, no_image_is_read, extra, says):
    path, out = _config(tmp_path, images, torchscript, extra)
    if extra.startswith("data:"):  # a second data section replaces the first: keep the source
        path.write_text(path.read_text().replace(f"data: {{source: {images}, size: 16}}\n", "")
                        .replace("data: {", f"data: {{source: {images}, size: 16, "))
    line = _one_line_error(runner.invoke(app, ["evaluate", str(path)]))
    assert says in line
    assert not out.exists()  # no half-started run folder


def test_a_nul_in_output_dir_is_refused_with_a_sentence(tmp_path, images, torchscript, no_image_is_read):
    path, _ = _config(tmp_path, images, torchscript, "")
    path.write_text(path.read_text().replace("output_dir: ", 'output_dir: "') .replace("/runs\n", '/ru\\0ns"\n', 1))
    line = _one_line_error(runner.invoke(app, ["evaluate", str(path)]))
    assert line == (f"error: {path}: invalid configuration: output_dir: contains a NUL character (\\x00), which no "
                    "file name or setting can hold; remove it")
    assert not any(p.is_dir() and p.name.startswith("ru") for p in tmp_path.iterdir())


def test_schema_errors_read_one_line_per_setting_without_links(tmp_path, images, torchscript):
    path, _ = _config(tmp_path, images, torchscript, "batch_size: 0\nattacks: [{name: pgd, paramz: {}}]\n")
    path.write_text(path.read_text().replace("size: 16", "size: 3, split: [0.5, 0.5]")
                    .replace("intensity: unit", "intensity: unit, input_size: 0"))
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2
    head, *lines = result.stderr.splitlines()
    assert head == f"error: {path}: invalid configuration (5 settings):"
    assert sorted(lines) == sorted([
        "  batch_size: input should be greater than or equal to 1 (got 0)",
        "  data.size: input should be greater than or equal to 16 (got 3)",
        "  data.split: input should be 'test' (got [0.5, 0.5]) or is required (at [2] of tuple[float, float, float])",
        "  model.load.input_size: input size 0 is not an image size: give the side in pixels the model takes, a whole "
        "number from 1 to 7,071 (e.g. 224), or a height and width of at most 50,000,000 pixels in all",
        "  attacks[0].paramz: is not a setting here; remove it or check its spelling",
    ])
    assert "https://" not in result.stderr and "[type=" not in result.stderr


@pytest.mark.parametrize("size", ["0", "-3", "100000"])
def test_a_degenerate_input_size_is_one_line_before_any_image(images, torchscript, no_image_is_read, size):
    line = _one_line_error(runner.invoke(app, ["predict", "--model", str(torchscript), "--classes", ",".join(CLASSES),
                                               "--intensity", "unit", "--input-size", size, str(images)]))
    assert line == (f"error: {torchscript}: input size {size} is not an image size: give the side in pixels the model "
                    "takes, a whole number from 1 to 7,071 (e.g. 224), or a height and width of at most 50,000,000 "
                    "pixels in all")


def test_evaluate_passes_an_input_size_of_0_on_to_be_refused(images, torchscript, tmp_path, no_image_is_read):
    """mr.evaluate dropped falsy contract values: an input size of 0 then meant "any size"."""
    with pytest.raises(ValueError, match="input size 0 is not an image size"):
        mr.evaluate(torchscript, str(images), preset="quick", classes=CLASSES, intensity="unit", input_size=0,
                    output_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["predict", "detect", "attack", "evaluate"])
def test_every_command_refuses_a_model_file_without_its_intensity(images, torchscript, tmp_path, no_image_is_read,
                                                                   command):
    args = {"predict": [str(images)], "detect": ["--input", str(images), "--reference", str(images)],
            "attack": ["--data", str(images), "--out", str(tmp_path / "out")],
            "evaluate": ["--data", str(images), "--output-dir", str(tmp_path / "runs")]}[command]
    line = _one_line_error(runner.invoke(app, [command, "--model", str(torchscript), "--classes", ",".join(CLASSES),
                                               *args]))
    assert line.startswith(f"error: {torchscript}: the file does not record how the model expects its input scaled")
    assert "unit: the pixels in [0, 1] as stored" in line and "byte: [0, 255]" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_the_configuration_needs_the_intensity_too(tmp_path, images, torchscript, no_image_is_read):
    path, out = _config(tmp_path, images, torchscript, "")
    path.write_text(path.read_text().replace(", intensity: unit", ""))
    line = _one_line_error(runner.invoke(app, ["evaluate", str(path)]))
    assert line.startswith(f"error: model: {torchscript}: the file does not record how the model expects its input")
    assert not out.exists()


def test_a_damaged_checkpoint_is_one_line_with_status_2(tmp_path, images, no_image_is_read):
    checkpoint = save_checkpoint(build_classifier("small-cnn", CLASSES, 16).eval(), tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", 10**12) + weights.read_bytes()[8:])
    line = _one_line_error(runner.invoke(app, ["predict", "--model", str(checkpoint), str(images)]))
    assert line == (f"error: {weights}: not a readable safetensors file (Error while deserializing header: header too "
                    "large); the checkpoint is damaged or truncated: copy it again, or re-save it with medrobust")


class _Settings(BaseModel):
    steps: int
    name: str


def test_a_pydantic_report_reaching_the_command_line_reads_one_line_per_field(capsys):
    @user_errors
    def command() -> None:
        _Settings.model_validate({"steps": "many"})

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: invalid _Settings (2 settings):",
        "  steps: input should be a valid integer, unable to parse string as an integer (got 'many')",
        "  name: is required",
    ]
