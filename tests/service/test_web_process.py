"""The web process never loads a model: serving the dashboard, checking an upload (model file,
archive, classes, configuration with its attack, defense and squeezer specs), queueing the job,
every read route and a finished job's guard definition (guard.yaml) run without importing torch,
in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.guard_run_files import write_finished_run

pytest.importorskip("fastapi")

SCRIPT = textwrap.dedent("""
    import shutil
    import sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from medrobust.service.app import create_app
    from medrobust.service.store import Store

    from medrobust.service.job_files import job_files

    data_dir, model, images, finished = (Path(a) for a in sys.argv[1:5])
    # every kind of component spec, checked by name and parameters before queueing
    CONFIG = ("attacks: [{name: 'pgd:steps=5', eps_sweep: [2/255]}, {name: sia, params: {n_copies: 3}}]\\n"
              "defenses: [jpeg:quality=60+tv]\\nadaptive: {attack: pgd, params: {steps: 5}}\\n"
              "detectors: {squeeze: {squeezers: ['bits:bits=5', 'median:size=2']}}\\n")
    bad = ("attacks: [{name: pgd, params: {stpes: 5}}]\\n")
    token = Store(data_dir).create_token("acme")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(data_dir)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200
        with model.open("rb") as m, images.open("rb") as i:
            job = client.post("/api/v1/jobs", headers=auth, data={"config": CONFIG},
                              files={"model": (model.name, m), "images": (images.name, i)})
        assert job.status_code == 202, job.text
        with model.open("rb") as m, images.open("rb") as i:
            refused = client.post("/api/v1/jobs", headers=auth, data={"config": bad},
                                  files={"model": (model.name, m), "images": (images.name, i)})
        assert refused.status_code == 422 and "unknown parameter(s) ['stpes']" in refused.text, refused.text
        job_id = job.json()["id"]
        assert client.get("/api/v1/jobs", headers=auth).status_code == 200
        assert client.get(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 200
        assert client.get(f"/api/v1/jobs/{job_id}/report", headers=auth).status_code == 409
        assert client.get(f"/api/v1/jobs/{job_id}/compare/{job_id}", headers=auth).status_code == 422  # itself
        store = Store(data_dir)  # the job finished: its run folder holds a finished run's files
        shutil.copytree(finished, job_files(data_dir, store.job(job_id)).run)
        assert store.finish(job_id, None, "done")
        guard = client.get(f"/api/v1/jobs/{job_id}/guard.yaml", headers=auth)
        assert guard.status_code == 200 and "medrobust guard serve --run " in guard.text, guard.text
        assert client.get(f"/api/v1/jobs/{job_id}/guard", headers=auth).json()["defense"]["chosen"] == "jpeg+tv"
        assert client.delete(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 202
    import medrobust.report.compare  # what the compare route imports when it runs
    print("torch" in sys.modules)
""")


def test_web_process_never_imports_torch(tmp_path, uploads):
    write_finished_run(tmp_path / "finished-run")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "service"), str(uploads.checkpoint_zip),
                             str(uploads.images_zip), str(tmp_path / "finished-run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
