"""Engines: where the runner's units of work (:mod:`medrobust.execution.units`) execute.

``engine.map(units)`` takes ``(batch index, unit)`` pairs — produced lazily, one at a time as
the engine has room, so only the batches in flight are in memory — and yields
``(batch index, arrays)`` as units finish, in any order. The driver (the runner) writes each
result to its batch file; engines never touch the run directory.

* :class:`LocalEngine` runs each unit in this process, in order, on the runner's own models.
* :class:`RayEngine` runs them on Ray actors (``ray.util.ActorPool``). Each actor loads the
  models once from what the driver shipped (:class:`~medrobust.execution.model_shipping.ModelSource`)
  and keeps them for the whole run. An actor killed mid-unit is restarted by Ray and the unit
  retried (``max_restarts`` / ``max_task_retries``); a unit that raises an error raises it here,
  as it would locally.

Results do not depend on the engine: a unit's randomness is seeded by its batch, never by the
worker or the order of completion. On CPU the equality is bit for bit provided the workers use
as many threads as the local run (float reductions in a convolution are summed in an order that
depends on the thread count); :class:`RayEngine` gives each actor ``threads_per_worker`` threads.
With more than one thread, oneDNN's convolutions sometimes round differently from run to run
(README, "What the demo prints"); with one thread per process every repeat we tried was identical.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from medrobust.execution.model_shipping import ModelSource
from medrobust.execution.units import Unit, Workbench

log = logging.getLogger(__name__)

Results = Iterator[tuple[int, dict[str, np.ndarray]]]
MAX_RESTARTS = 3
"""How often Ray restarts a dead actor and retries its unit before the run fails."""


class LocalEngine:
    """Every unit in this process, one after the other, on the runner's own models.

    Args:
        bench: the models and the device the units run with.
    """

    name = "local"

    def __init__(self, bench: Workbench) -> None:
        self.bench = bench
        self.workers = 1

    def map(self, units: Iterable[tuple[int, Unit]]) -> Results:
        """Run the units in order, each as it is taken from ``units``.

        Args:
            units: ``(batch index, unit)`` pairs, taken one at a time.

        Yields:
            ``(batch index, arrays)`` for each unit, in the order given.
        """
        for b, unit in units:
            yield b, self.bench.execute(unit)

    def close(self) -> None:
        """Nothing to release."""
        pass


class UnitActor:
    """A Ray actor: the shipped models, loaded once (at its first unit), and a :class:`Workbench`.

    The models come with each call as ``shipped`` = ``[ObjectRef of the list of ModelSource]``
    (nested, so Ray passes the reference and nothing is copied per call); an actor restarted by
    Ray after a crash loads them again at the unit it retries.

    Args:
        device: the device setting, resolved on the actor's machine (``auto``: its GPU if any).
        threads: the torch threads the actor uses (at least 1).
    """

    def __init__(self, device: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.device = device
        self.bench: Workbench | None = None

    def run(self, b: int, unit: Unit, shipped: list) -> tuple[int, dict[str, np.ndarray]]:
        """Run batch ``b``'s unit, loading the shipped models first if this actor has not yet.

        Args:
            b: the batch's index, returned with its result.
            unit: the unit of work.
            shipped: ``[ObjectRef of the list of ModelSource]``.

        Returns:
            ``(b, arrays)``.
        """
        if self.bench is None:
            import ray

            from medrobust.models.device import resolve_device

            dev = resolve_device(self.device)
            sources: list[ModelSource] = ray.get(shipped[0])
            self.bench = Workbench({s.name: s.materialise(dev) for s in sources}, dev)
        return b, self.bench.execute(unit)


class RayEngine:
    """Units on ``workers`` Ray actors, one unit in flight per actor.

    Args:
        sources: the models to ship (:class:`~medrobust.execution.model_shipping.ModelSource`),
            put once in Ray's object store and held by the driver for the whole run.
        device: the device setting each actor resolves on its own machine.
        address: None (the default) starts a private local Ray instance with ``workers`` x
            ``threads_per_worker`` CPUs (all of this machine's without ``workers``); ``"auto"``,
            ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins a running cluster (checked to be
            reachable first).
        workers: the actors. Default None: as many as the cluster holds; more than it holds is
            capped, with a warning.
        gpus_per_worker: GPUs each actor reserves (0, 1 or a fraction). Default 0.
        threads_per_worker: CPUs each actor reserves and the torch threads it uses. Default 1.

    Raises:
        RuntimeError: Ray is not installed.
        ConnectionError: no cluster can be reached at ``address``.
        ValueError: the cluster cannot hold one worker (or has no GPU for ``gpus_per_worker``),
            or a model held in memory cannot be shipped.
    """

    name = "ray"

    def __init__(self, sources: list[ModelSource], device: str, address: str | None = None,
                 workers: int | None = None, gpus_per_worker: float = 0.0, threads_per_worker: int = 1) -> None:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise RuntimeError("execution.engine ray needs Ray: pip install 'medrobust[scale]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False,
                       "configure_logging": False}
            if address:
                check_reachable(address)
                try:
                    ray.init(address=address, **options)
                except ConnectionError as err:
                    raise ConnectionError(f"no Ray cluster at {address}: {err}; start one (ray start --head) or use "
                                          "--ray alone for a Ray instance on this machine") from None
            else:  # a private instance, even where `ray start` left a cluster this machine would join
                ray.init(address="local", num_cpus=(workers or os.cpu_count() or 1) * threads_per_worker, **options)
                self._started = True
        try:
            self.workers = schedulable_workers(ray.cluster_resources(), workers, threads_per_worker, gpus_per_worker)
        except ValueError:
            if self._started:
                ray.shutdown()
            raise
        try:
            self._shipped = ray.put(sources)  # held by the driver for the whole run, so restarts find it
        except Exception as err:  # noqa: BLE001 — whatever the serialiser met in a user's in-memory model
            raise ValueError(f"the model held in memory cannot be shipped to the Ray workers ({type(err).__name__}: "
                             f"{err}); save it to a file and pass its path instead") from None
        actor_class = ray.remote(UnitActor).options(
            num_cpus=threads_per_worker, num_gpus=gpus_per_worker, max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS)
        self.actors = [actor_class.remote(device, threads_per_worker) for _ in range(self.workers)]
        self.pool = ActorPool(self.actors)
        log.info("Ray: %d worker%s (%d CPU, %g GPU each) at %s", self.workers, "" if self.workers == 1 else "s",
                 threads_per_worker, gpus_per_worker, address or "a local Ray instance")

    def map(self, units: Iterable[tuple[int, Unit]]) -> Results:
        """Run the units on the actors, one in flight per actor, taking the next unit from
        ``units`` only when an actor is free (so only the batches in flight are in memory).

        Args:
            units: ``(batch index, unit)`` pairs, taken one at a time.

        Yields:
            ``(batch index, arrays)`` as units finish, in any order.

        Raises:
            Exception: a unit's own error, as it would be raised locally.
            RuntimeError: an actor died more often than Ray restarts it (the finished batches
                are kept; running again resumes).
        """
        ray = self._ray
        pending = iter(units)
        exhausted = False
        while True:
            while not exhausted and self.pool.has_free():
                item = next(pending, None)
                if item is None:
                    exhausted = True
                else:
                    self.pool.submit(lambda actor, bu: actor.run.remote(*bu, [self._shipped]), item)
            if not self.pool.has_next():
                return
            try:
                yield self.pool.get_next_unordered()
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            except ray.exceptions.RayActorError as err:
                raise RuntimeError(f"a Ray worker could not run a unit of work (it died {MAX_RESTARTS + 1} times, or "
                                   f"the cluster could not start it); the finished batches are kept, run again to "
                                   f"resume. Ray said: {err}") from None

    def close(self) -> None:
        """Kill the actors, and shut down the Ray instance this engine started (not a cluster it joined)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._started:
            self._ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Check a Ray address answers before Ray is asked (Ray itself retries an unreachable
    address for minutes).

    Args:
        address: ``HOST:PORT`` or ``ray://HOST:PORT`` (a TCP connection must open); ``auto`` is
            left to Ray.
        timeout_s: how long the connection may take. Default 5 seconds.

    Raises:
        ConnectionError: the address cannot be reached (naming the ports Ray listens on).
    """
    import socket

    if address.lower() == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} ({err}); check the address and that "
                              "`ray start --head` runs there (HOST:PORT is the head's GCS port, 6379 by default; "
                              "ray://HOST:PORT its client port, 10001)") from None


def schedulable_workers(resources: dict, workers: int | None, threads: int, gpus: float) -> int:
    """How many actors the cluster can hold at once: an actor the cluster cannot place would wait
    for ever, so asking for more than fit is capped (with a warning).

    Args:
        resources: the cluster's resources (``ray.cluster_resources()``: ``CPU``, ``GPU``).
        workers: the actors asked for; None: all the cluster holds.
        threads: CPUs each actor reserves.
        gpus: GPUs each actor reserves (0: none).

    Returns:
        ``workers``, or fewer when fewer fit, or all that fit when None.

    Raises:
        ValueError: a GPU request on a cluster without enough GPUs, or not even one actor fits.
    """
    cpus = int(resources.get("CPU", 0))
    fit = cpus // max(1, threads)
    if gpus > 0:
        total_gpus = float(resources.get("GPU", 0))
        if total_gpus < gpus:
            raise ValueError(f"execution.gpus_per_worker is {gpus:g} but the Ray cluster has {total_gpus:g} GPU(s); "
                             "use gpus_per_worker: 0 or a cluster with GPUs")
        fit = min(fit, int(total_gpus // gpus))
    if fit < 1:
        raise ValueError(f"the Ray cluster has {cpus} CPU(s), fewer than the {threads} one worker needs")
    if workers is not None and workers > fit:
        log.warning("Ray: %d workers asked for, but the cluster holds %d at once (%d CPU%s%s); using %d",
                    workers, fit, cpus, "" if cpus == 1 else "s",
                    f", {float(resources.get('GPU', 0)):g} GPUs" if gpus else "", fit)
        return fit
    return workers or fit


def make_engine(execution, models: dict, device: torch.device, device_setting: str,
                ship: Callable[[], list[ModelSource]]):
    """The engine the configuration names, decided here, once.

    Args:
        execution: the configuration's
            :class:`~medrobust.evaluation.config_sections.ExecutionConfig`.
        models: the driver's models by name, on ``device`` (what a local engine runs).
        device: the driver's torch device.
        device_setting: the device setting as configured, which Ray actors resolve themselves.
        ship: builds the models' sources for Ray, called only when the engine is Ray.

    Returns:
        A :class:`LocalEngine` on ``models``, or a :class:`RayEngine` whose actors each run with
        ``execution.threads_per_worker`` threads.
    """
    if execution.engine == "local":
        return LocalEngine(Workbench(models, device))
    return RayEngine(ship(), device_setting, execution.address, execution.workers, execution.gpus_per_worker,
                     threads_per_worker=execution.threads_per_worker)
