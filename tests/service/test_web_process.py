"""The web process never loads a model: serving the dashboard, checking an upload (model file,
archive, classes, configuration with its attack, defense and squeezer specs), queueing the job
and every read route run without importing torch, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("fastapi")

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from medrobust.service.app import create_app
    from medrobust.service.store import Store

    data_dir, model, images = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
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
        assert client.delete(f"/api/v1/jobs/{job_id}", headers=auth).status_code == 202
    import medrobust.report.compare  # what the compare route imports when it runs
    print("torch" in sys.modules)
""")


def test_web_process_never_imports_torch(tmp_path, uploads):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "service"), str(uploads.checkpoint_zip),
                             str(uploads.images_zip)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
