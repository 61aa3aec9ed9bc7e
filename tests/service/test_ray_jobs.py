"""A service worker hands its jobs to a Ray cluster (``medrobust worker --ray ADDRESS``): the job
runs on the cluster's actors, keeps its state in the service's database, and gives the same
numbers as a job run in the worker's own process."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray", reason="Ray is not installed: pip install 'medrobust[scale]'")

from fastapi.testclient import TestClient  # noqa: E402

from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.store import Store  # noqa: E402
from medrobust.service.worker import Worker  # noqa: E402

from .conftest import LEAN_CONFIG  # noqa: E402
from .test_api import API, submit  # noqa: E402


def test_a_job_runs_on_ray_with_its_state_in_the_database(tmp_path, uploads, ray_cluster) -> None:
    results = {}
    for engine in ("local", "ray"):
        data_dir = tmp_path / engine
        store = Store(data_dir)
        token = store.create_token("acme")
        execution = {"engine": "ray", "address": ray_cluster, "workers": 2} if engine == "ray" else None
        with TestClient(create_app(data_dir)) as client:
            response = submit(client, token, uploads.checkpoint_zip, uploads.images_zip, config=LEAN_CONFIG)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            Worker(data_dir, poll_s=0.05, execution=execution).run(once=True)
            auth = {"Authorization": f"Bearer {token}"}
            job = client.get(f"{API}/{job_id}", headers=auth).json()
            assert job["status"] == "done", job["error"]
            assert job["stages_finished"] >= 5 and job["attempts"] == 1
            results[engine] = client.get(f"{API}/{job_id}/metrics", headers=auth).json()
    assert results["ray"]["config"]["execution"]["engine"] == "ray"
    assert results["local"]["config"]["execution"]["engine"] == "local"
    for key in ("baseline", "attacks", "defenses"):
        assert results["ray"][key] == results["local"][key] or _same_but_timings(results["ray"][key],
                                                                                 results["local"][key]), key


def _same_but_timings(a, b) -> bool:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "second" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(a) == strip(b)
