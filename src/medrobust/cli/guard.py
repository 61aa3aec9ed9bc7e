"""``medrobust guard serve``: a model behind its defense and detectors, served over HTTP with the
query-attack watch (README.md, "Guarded inference"). Needs the ``service`` extra: ``pip install 'medrobust[service]'``.

The guard is a finished run's (``--run RUN``: its model, defense, detector and threshold, checked
by the model's SHA-256) or one put together here (``--model M`` with the contract options every
command that loads a model takes, ``--defense``, ``--detector``, ``--fpr``, ``--calibration``).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

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
    app,
    console,
    user_errors,
)

guard_app = typer.Typer(help="Serve a model behind the defense and detectors it was evaluated with.",
                        no_args_is_help=True)
app.add_typer(guard_app, name="guard")


def _stop_with_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """SIGTERM this process (uvicorn then shuts down) once ``parent_pid`` is no longer its parent:
    a server a test or a supervisor started does not outlive it, however that one ended."""
    def watch() -> None:
        while True:
            threading.Event().wait(interval_s)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@guard_app.command("serve")
@user_errors
def serve(
    run: Annotated[Optional[Path], typer.Option("--run", help="A finished run folder: serve the guard it evaluated.")]
    = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Or a model (checkpoint folder, TorchScript, state dict, .keras, .onnx) to guard.")] = None,
    defense: Annotated[Optional[str], typer.Option(
        "--defense", help="The defense spec (--model; default jpeg:quality=75+tv, 'none' for none), or which of the "
        "run's defenses (--run; default its first).")] = None,
    detector: Annotated[Optional[list[str]], typer.Option(
        "--detector", help="A reference-free detector spec (--model; repeatable; default squeeze; 'none' for none).")]
    = None,
    fpr: Annotated[float, typer.Option("--fpr", min=0.0, max=0.99, help="The detectors' target false positive rate "
                                       "on the calibration images.")] = 0.05,
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Folder of clean images like the ones the guard will see, to calibrate the detectors "
        "on.")] = None,
    on_flag: Annotated[str, typer.Option("--on-flag", help="abstain (withhold the label) | warn (give it, flagged).")]
    = "abstain",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8100,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes, each loading the model once.")]
    = 1,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="CPU threads of each process's model (default: the machine's cores shared among the "
        "--workers processes, so N processes do not contend for the same cores).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="The service's data directory: its tokens (medrobust tokens create) authorise requests.")]
    = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Answer without tokens (loopback --host only).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "cpu",
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="The query-attack watch (flags clients whose "
                                        "queries look like a black-box attack's search).")] = True,
    watch_neighbours: Annotated[int, typer.Option("--watch-neighbours", min=1, help="Near earlier queries that make "
                                                  "a query count as near.")] = 20,
    watch_radius: Annotated[float, typer.Option("--watch-radius", min=1e-6, help="RMS distance of 16x16 grey "
                                                "thumbnails within which two queries are near.")] = 0.03,
    watch_window: Annotated[int, typer.Option("--watch-window", min=1, help="Queries over which the near rate is "
                                              "taken.")] = 50,
    watch_rate: Annotated[float, typer.Option("--watch-rate", min=0.0, max=0.99, help="Near rate above which a client "
                                              "is flagged.")] = 0.2,
    max_request_mb: Annotated[float, typer.Option("--max-request-mb", help="Largest request.")] = 512,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Most images in one request.")] = 1000,
    classes: ClassesOption = None,
    input_size: InputSizeOption = None,
    channels: ChannelsOption = None,
    intensity: IntensityOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    outputs: OutputsOption = None,
    channels_last: ChannelsLastOption = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = False,
    stop_with_parent: Annotated[Optional[int], typer.Option(
        "--stop-with-parent", hidden=True, help="Stop when this process is gone.")] = None,
) -> None:
    """Serve a guard: POST /v1/predict, GET /v1/guard, /healthz, /metrics."""
    if (run is None) == (model is None):
        raise ValueError("give the guard to serve as --run RUN (a finished run folder) or as --model MODEL, one of them")
    try:
        import uvicorn

        from medrobust.service.guard_auth import check_auth_choice

        check_auth_choice(host, data_dir, no_auth)  # refused before the heavier imports and the model
        from medrobust.service.guard_app import compute_thread, create_guard_app, guard_limits
        from medrobust.service.guard_spec import SPEC_VARIABLE, GuardSpec, build_guard
    except ImportError as err:
        raise ValueError(f"the guard server needs the service extra ({err.name} is missing): "
                         "pip install 'medrobust[service]'") from None
    import medrobust as mr
    from medrobust.service.limits import MiB

    contract = {"classes": classes, "input_size": input_size, "channels": channels, "intensity": intensity,
                "output_kind": output_kind, "arch": arch, "trust_pickle": trust_pickle or None, "outputs": outputs,
                "channels_last": channels_last}
    if run is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in contract.items() if v is not None]
        if given or detector:
            extra = ", ".join(given + (["--detector"] if detector else []))
            raise ValueError(f"{extra}: a run's guard takes its model, contract and detectors from the run {run}; "
                             "leave them out, or serve --model with them")
    watch_settings = {"radius": watch_radius, "neighbours": watch_neighbours, "window": watch_window,
                      "max_near_rate": watch_rate} if watch else None
    if watch_settings is not None:
        mr.QueryWatch(**watch_settings)  # a bad setting is refused before the model loads
    detectors = None if not detector else [] if [d.lower() for d in detector] == ["none"] else list(detector)
    spec = GuardSpec(run=str(run) if run else None, model=str(model) if model else None, contract=contract,
                     defense="" if defense and defense.lower() == "none" else defense, detectors=detectors, fpr=fpr,
                     calibration=str(calibration) if calibration else None, on_flag=on_flag, device=device,
                     data_dir=str(data_dir) if data_dir else None, watch=watch_settings,
                     threads=threads or max(1, (os.cpu_count() or 1) // workers),
                     limits={"max_request_bytes": int(max_request_mb * MiB), "max_images": max_images})
    compute = compute_thread()  # the guard is built on the thread that will run it (guard_app's docstring)
    built = compute.submit(build_guard, spec).result()  # the model loads here: a refusal is one line before any port
    described = built.describe()
    if stop_with_parent is not None:
        _stop_with_parent(stop_with_parent)
    console.print(f"medrobust guard on http://{host}:{port}/v1/predict: model {described['model']['file']} (SHA-256 "
                  f"{(described['model']['sha256'] or 'in memory')[:12]}...), defense {described['defense'] or 'none'}, "
                  f"detectors {', '.join(built.detectors) or 'none'}, on flag {on_flag}, query watch "
                  f"{'on' if watch else 'off'}, {'no tokens (loopback)' if no_auth else f'tokens of {data_dir}'}, "
                  f"{workers} process{'es' if workers != 1 else ''} of {spec.threads} thread{'s' if spec.threads != 1 else ''}",
                  highlight=False, markup=False)
    config = {"host": host, "port": port, "log_level": "info", "access_log": access_log}
    if workers == 1:
        web = create_guard_app(built, data_dir=data_dir, watch=mr.QueryWatch(**watch_settings) if watch_settings
                               else None, limits=guard_limits(**spec.limits), compute=compute)
        uvicorn.run(web, **config)
        return
    del built, described  # each worker process loads its own
    compute.shutdown()
    os.environ[SPEC_VARIABLE] = spec.to_json()
    uvicorn.run("medrobust.service.guard_app:app_from_environment", factory=True, workers=workers, **config)
