"""`medrobust tokens` (create prints the token once and stores its hash; list; revoke), `medrobust
worker` without a data directory, and the worker pool of `medrobust serve` starting a new worker
when one dies."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")

from medrobust.cli import app  # noqa: E402
from medrobust.cli.serve import WorkerPool  # noqa: E402
from medrobust.service.store import Store  # noqa: E402

runner = CliRunner()


def test_tokens_create_list_revoke(tmp_path):
    data_dir = str(tmp_path / "srv")
    created = runner.invoke(app, ["tokens", "create", "--data-dir", data_dir, "--tenant", "acme"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("mrb_") and len(token) > 40
    store = Store(data_dir)
    assert store.tenant_for_token(token).name == "acme"
    assert token.encode() not in (tmp_path / "srv" / "service.db").read_bytes()
    listed = runner.invoke(app, ["tokens", "list", "--data-dir", data_dir])
    assert listed.exit_code == 0 and "acme" in listed.stdout and token[:10] in listed.stdout
    assert token not in listed.stdout  # only the first characters are ever shown again
    revoked = runner.invoke(app, ["tokens", "revoke", "--data-dir", data_dir, token[:10]])
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.stdout
    assert store.tenant_for_token(token) is None
    again = runner.invoke(app, ["tokens", "revoke", "--data-dir", data_dir, "1"])
    assert again.exit_code == 2 and "no active token" in again.output
    bad = runner.invoke(app, ["tokens", "create", "--data-dir", data_dir, "--tenant", " "])
    assert bad.exit_code == 2 and "tenant name" in bad.output


def test_worker_without_a_service_database_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["worker", "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "medrobust serve --data-dir" in result.output


def test_worker_pool_starts_a_new_worker_when_one_dies(monkeypatch):
    monkeypatch.setattr("medrobust.cli.serve.WORKER_RESTART_DELAY_S", 0.05)
    pool = WorkerPool([sys.executable, "-c", "import time; time.sleep(60)"], 2)
    pool.start()
    try:
        first = pool.processes[0]
        first.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while pool.processes[0] is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.processes[0] is not first and pool.processes[0].poll() is None
        assert pool.processes[1].poll() is None
    finally:
        pool.stop(timeout_s=5)
    assert all(p.poll() is not None for p in pool.processes)


def test_serve_workers_do_not_outlive_the_server(tmp_path, port):
    """`medrobust serve --workers 1` SIGKILLed: its worker notices and stops by itself."""
    pytest.importorskip("uvicorn")
    import os
    import subprocess

    import httpx

    data_dir = tmp_path / "srv"
    server = subprocess.Popen([sys.executable, "-m", "medrobust", "serve", "--data-dir", str(data_dir), "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.monotonic() + 90, 0
        while time.monotonic() < deadline and workers < 1:
            try:
                workers = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["workers"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert workers == 1
        (pid,) = [row["pid"] for row in Store(data_dir).db.execute("SELECT pid FROM workers")]
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert not _alive(pid), "the worker outlived its server"
    finally:
        if server.poll() is None:
            server.kill()
        for row in Store(data_dir).db.execute("SELECT pid FROM workers"):
            if _alive(row["pid"]):
                os.kill(row["pid"], signal.SIGKILL)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_tenants_limit_gives_a_tenant_its_own_compute_time_per_job(tmp_path):
    data_dir = str(tmp_path / "srv")
    runner.invoke(app, ["tokens", "create", "--data-dir", data_dir, "--tenant", "acme"])
    store = Store(data_dir)
    tenant = store.tenant_for_token(store.create_token("acme"))
    given = runner.invoke(app, ["tenants", "limit", "--data-dir", data_dir, "--tenant", "acme", "--job-hours", "6"])
    assert given.exit_code == 0 and "tenant acme: 6 h of compute per job" in given.output, given.output
    assert store.tenant_job_seconds(tenant) == 6 * 3600
    back = runner.invoke(app, ["tenants", "limit", "--data-dir", data_dir, "--tenant", "acme"])
    assert back.exit_code == 0 and "the server's limit" in back.output
    assert store.tenant_job_seconds(tenant) is None
    unknown = runner.invoke(app, ["tenants", "limit", "--data-dir", data_dir, "--tenant", "initech", "--job-hours", "1"])
    assert unknown.exit_code == 2 and "no tenant 'initech'" in unknown.output


def test_serve_ceiling_options_raise_one_ceiling_or_say_what_they_take():
    from medrobust.cli.serve import work_ceilings
    from medrobust.service.limits import WORK_CEILINGS

    assert work_ceilings(["steps=5000", "queries=50000"]) == {**WORK_CEILINGS, "steps": 5000, "queries": 50000}
    for bad in ("stepz=10", "steps=0", "steps=many", "steps"):
        with pytest.raises(ValueError, match=r"--ceiling .*: write NAME=N with N a whole number of at least 1 and NAME "
                                             r"one of steps, restarts, eot_samples, queries, n_copies, max_iter, epochs"):
            work_ceilings([bad])
