"""A job whose model cannot be loaded fails with the loader's one line as its error (no traceback,
no exception type): a checkpoint with a damaged safetensors header passes the web process's
checks, which read only model.json, and fails in the worker that way."""

from __future__ import annotations

import struct
import zipfile

import pytest

from medrobust.service.worker import Worker

API = "/api/v1/jobs"


def test_a_damaged_checkpoint_fails_the_job_with_one_line(service, uploads, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(uploads.checkpoint_zip) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("model.safetensors"):
                data = struct.pack("<Q", 10**12) + data[8:]  # a header length no file has
            target.writestr(info, data)
    with broken.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"preset": "quick"},
                                        files={"model": ("broken.zip", model), "images": ("xrays.zip", images)})
    assert response.status_code == 202, response.json()
    Worker(service.data_dir, poll_s=0.01).run(once=True)
    job = service.client.get(f"{API}/{response.json()['id']}", headers=service.headers()).json()
    assert job["status"] == "failed"
    # the job runs in its upload folder: the checkpoint folder of the zip (chest-cnn/) was extracted under model/
    assert job["error"] == ("model/chest-cnn/model.safetensors: not a readable safetensors file (Error while "
                            "deserializing header: header too large); the checkpoint is damaged or truncated: copy it "
                            "again, or re-save it with medrobust")


@pytest.fixture(autouse=True)
def _fastapi():
    pytest.importorskip("fastapi")
