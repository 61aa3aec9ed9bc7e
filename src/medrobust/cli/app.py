"""The ``medrobust`` application object and what its commands share: the consoles, turning
user errors into one clear line, and what an interrupted command says (the progress display
is :mod:`medrobust.cli.progress`).

Two consoles: :data:`console` (stdout) carries a command's results, :data:`err_console`
(stderr) carries errors, warnings and summaries of skipped files, so that ``--json`` output on
stdout can be piped into another program line by line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from medrobust._version import __version__

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="medrobust",
    help="How far can a medical image classifier be fooled, what do defenses win back, and can attacks be detected.",
    no_args_is_help=True,
    add_completion=False,
)

console = Console(soft_wrap=True)
"""Results (stdout)."""
err_console = Console(stderr=True, soft_wrap=True)
"""Errors, log messages and skipped-file summaries (stderr)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)


INTERRUPTED_EXIT = 130
"""Exit status after Ctrl-C: the shell's convention for a command ended by SIGINT (128 + 2)."""

InterruptLine = Callable[[dict[str, object]], str]
"""What a command says when interrupted, from its options by flag (``{"--out": Path(...)}``)."""


def user_errors(command: Callable[P, R] | None = None, *,
                on_interrupt: InterruptLine | None = None):  # noqa: ANN201  (a decorator, bare or with options)
    """Turn an error meant for the user (a bad path, value or file) into one clear line on
    stderr and exit status 2, instead of a traceback; ``--verbose`` still logs the traceback.

    Operating-system errors (a file standing where an output folder should be, a read-only or
    full disk, no permission) become a line naming the path and the fix
    (:func:`medrobust.cli.os_errors.os_error_line`); they are a fact about the user's machine,
    not a bug, so they get no traceback either.

    Ctrl-C ends the command with exit status 130 and one line on stderr: ``interrupted``, and,
    given ``on_interrupt(options)``, what was kept and the command that resumes it. Use as
    ``@user_errors`` or ``@user_errors(on_interrupt=...)``.
    """
    if command is None:
        return functools.partial(user_errors, on_interrupt=on_interrupt)

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            from medrobust.cli.os_errors import command_options

            line = "interrupted"
            if on_interrupt is not None:
                line += ": " + on_interrupt(command_options(command, args, kwargs))
            err_console.print(line, markup=False, highlight=False)
            raise typer.Exit(code=INTERRUPTED_EXIT) from None
        except OSError as err:
            from medrobust.cli.os_errors import command_options, os_error_line

            logging.getLogger("medrobust").debug("traceback", exc_info=True)
            print_error(os_error_line(err, command_options(command, args, kwargs)))
            raise typer.Exit(code=2) from None
        except USER_ERRORS as err:
            logging.getLogger("medrobust").debug("traceback", exc_info=True)
            # an error may word its fix in CLI terms; a pydantic report reads one line per field
            print_error(getattr(err, "cli_message", None) or _one_line_per_field(err))
            raise typer.Exit(code=2) from None

    return wrapper


def _one_line_per_field(err: BaseException) -> str:
    """The error's text; a pydantic report that reached here unformatted (a ValueError too) reads
    one line per field, without error codes and links, as a configuration's does."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        from medrobust.evaluation.config import invalid_configuration

        return str(invalid_configuration(err, what=err.title))
    return str(err)


def same_command(drop: tuple[str, ...] = ()) -> str:
    """The command line as the user typed it (``medrobust`` and its arguments, quoted for the
    shell), without the flags in ``drop`` (``--restart``: repeated, it would delete what a
    resume keeps)."""
    import shlex
    import sys

    return shlex.join(["medrobust", *(arg for arg in sys.argv[1:] if arg not in drop)])


def print_error(message: str) -> None:
    """``error: message`` on stderr; the message is printed literally (no rich markup), with
    undecodable bytes of quoted file names escaped so printing cannot fail."""
    from medrobust.files.printable import printable_text

    err_console.print(f"[bold red]error:[/bold red] {escape(printable_text(message))}", highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"medrobust {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Log debug messages and every per-image line (else only in RUN/log.txt).")] = False,
) -> None:
    from medrobust.logs.per_image_log import PER_IMAGE_LOGGER

    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False)
    if not verbose:  # per-image lines (detector verdicts, skipped files) would flood the terminal
        handler.addFilter(lambda record: not record.name.startswith(PER_IMAGE_LOGGER))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", handlers=[handler],
                        force=True)


# --- a foreign model's contract, the same options on every command that loads a model --------
ClassesOption = Annotated[Optional[str], typer.Option(
    "--classes", help="Comma-separated class names of a foreign model, in its output order.")]
InputSizeOption = Annotated[Optional[str], typer.Option(
    "--input-size", help="Input size the model expects: a side (224), HEIGHT,WIDTH, or a volume model's "
    "DEPTH,HEIGHT,WIDTH (16,64,64).")]
ChannelsOption = Annotated[Optional[int], typer.Option(
    "--channels", "--network-channels", help="Channels the network's first layer takes: 1 | 3 (default: what a "
    ".keras/.onnx file declares, the --arch's, else 3).")]
IntensityOption = Annotated[Optional[str], typer.Option(
    "--intensity", help="How the model's training scaled its input: unit ([0, 1]) | imagenet (ImageNet mean/std) | "
    "symmetric ([-1, 1]) | byte ([0, 255]) | percentile:LOW,HIGH (each image scaled by its own percentiles, e.g. "
    "percentile:1,99) | hu_windows:LEVEL,WIDTH;... (CT windows in HU; or give --window). Required for any model "
    "file but a medrobust checkpoint.")]
WindowOption = Annotated[Optional[list[str]], typer.Option(
    "--window", help="A CT window LEVEL,WIDTH in HU the model takes, one network channel each (repeat it: "
    "--window 40,80 --window 80,200 --window 600,2800); the images are CT in HU. Instead of --intensity.")]
OutputKindOption = Annotated[Optional[str], typer.Option("--output-kind", help="softmax | binary | multilabel")]
ArchOption = Annotated[Optional[str], typer.Option("--arch", help="Zoo architecture of a state dict.")]
TrustPickleOption = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow unpickling a whole module (runs code from the file).")]
OutputsOption = Annotated[Optional[str], typer.Option(
    "--outputs", help="logits | probabilities: what a .keras/.onnx model returns (default: a final softmax or "
    "sigmoid is detected).")]
ChannelsLastOption = Annotated[Optional[bool], typer.Option(
    "--channels-last/--channels-first", help="The network takes (B, H, W, C) (default: channels-last for .keras, "
    "else channels-first).")]


def contract_from_options(model: Path | None, classes: Optional[str] = None, input_size: Optional[str] = None,
                          channels: Optional[int] = None, intensity: Optional[str] = None,
                          output_kind: Optional[str] = None, arch: Optional[str] = None, trust_pickle: bool = False,
                          outputs: Optional[str] = None, channels_last: Optional[bool] = None,
                          windows: Optional[list[str]] = None):  # -> mr.ModelContract
    """The :class:`medrobust.ModelContract` the contract options above declare for ``model``, built
    once per command and passed whole to the public layer; a refused value is one line naming the
    model file (before it is read). ``windows`` (``--window L,W``, repeated) is the CT windows'
    form of ``intensity``: joined into ``hu_windows:L,W;L,W``, read by the contract's one parser."""
    import medrobust as mr

    if windows:
        if intensity is not None:
            raise ValueError(f"{model}: both --intensity {intensity} and --window were given; CT windows are the "
                             "model's intensity convention, so give one of them")
        from medrobust.specs.contract_names import windows_intensity

        intensity = windows_intensity(windows)

    return mr.ModelContract.given(None, {
        "classes": classes, "input_size": input_size, "channels": channels, "intensity": intensity,
        "output_kind": output_kind, "arch": arch, "trust_pickle": trust_pickle, "outputs": outputs,
        "channels_last": channels_last}, where=model)


def load_cli_model(path: Path, contract=None):  # (Path, mr.ModelContract | None) -> Classifier
    """:func:`medrobust.load_model` of ``path`` with the contract the command's options declared."""
    import medrobust as mr

    return mr.load_model(path, contract)


def print_skipped(skipped: list[str]) -> None:
    """The skipped files, one per line, on stderr: stdout holds only the results."""
    from medrobust.files.printable import printable_text

    err_console.print(f"{len(skipped)} file(s) skipped:", highlight=False)
    for line in skipped:
        err_console.print(f"  {printable_text(line)}", markup=False, highlight=False)
