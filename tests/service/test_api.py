"""The API (TestClient): every route and status code, tokens, tenant isolation, and every upload
rule (zip slip, symlink member, zip bomb, oversize streamed upload, pickled model, unknown
extension, a configuration naming a path). Jobs are run by an in-process worker."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from medrobust.layer.guard_definition import guard_definition  # noqa: E402
from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.job_files import job_files  # noqa: E402
from medrobust.service.limits import ServiceLimits  # noqa: E402
from medrobust.service.store import Store  # noqa: E402
from medrobust.service.worker import Worker  # noqa: E402
from tests.guard_run_files import write_finished_run  # noqa: E402
from tests.service.conftest import LEAN_CONFIG  # noqa: E402

API = "/api/v1/jobs"


def submit(client, token: str, model: Path, images: Path, **fields):
    with model.open("rb") as m, images.open("rb") as i:
        return client.post(API, headers={"Authorization": f"Bearer {token}"},
                           files={"model": (model.name, m), "images": (images.name, i)},
                           data={k: str(v) for k, v in fields.items()})


def zip_bytes(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, uploads):
    """A data directory with two finished jobs of tenant acme (checkpoint zip with the quick
    preset, TorchScript with the lean configuration) and the app over it."""
    data_dir = tmp_path_factory.mktemp("finished") / "service"
    store = Store(data_dir)
    token, other = store.create_token("acme"), store.create_token("globex")
    with TestClient(create_app(data_dir)) as client:
        a = submit(client, token, uploads.checkpoint_zip, uploads.images_zip, preset="quick")
        b = submit(client, token, uploads.torchscript, uploads.images_zip, config=LEAN_CONFIG,
                   classes="normal,PNEUMONIA,pneumothorax", input_size=32, intensity="unit")
        assert a.status_code == 202, a.text
        assert b.status_code == 202, b.text
        Worker(data_dir, poll_s=0.05).run(once=True)
        yield client, token, other, a.json()["id"], b.json()["id"], data_dir


def test_submitted_job_runs_to_done_with_its_results(finished, uploads):
    client, token, _, a, b, data_dir = finished
    auth = {"Authorization": f"Bearer {token}"}
    for job_id in (a, b):
        job = client.get(f"{API}/{job_id}", headers=auth).json()
        assert job["status"] == "done", job["error"]
        assert job["image_files"] == 36 and job["ignored_files"] == ["xrays/README.txt"]
        assert job["headline"]["overall"] and job["headline"]["rows"], job["headline"]
        assert job["fraction"] is None and job["stage"] is None and job["stages_finished"] >= 5
        report = client.get(f"{API}/{job_id}/report", headers=auth)
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "sandbox" in report.headers["content-security-policy"]
        assert "chest-cnn" in report.text
        statement = client.get(f"{API}/{job_id}/statement", headers=auth)
        assert statement.status_code == 200 and "<html" in statement.text.lower()
        metrics = client.get(f"{API}/{job_id}/metrics", headers=auth).json()
        scorecard = client.get(f"{API}/{job_id}/scorecard", headers=auth).json()
        assert metrics["baseline"]["n"] == 36
        assert scorecard["overall_text"] == job["headline"]["overall"]
        artifacts = client.get(f"{API}/{job_id}/artifacts.zip", headers=auth)
        assert artifacts.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(artifacts.content)).namelist()
        root = names[0].split("/")[0]
        assert root.startswith("chest-cnn-") and f"{root}/metrics.json" in names and f"{root}/report.html" in names
        assert not any(n.endswith((".pt", ".safetensors", ".zip")) for n in names), names  # no uploaded model
        # the run names the uploaded files, never the server's folders
        for text in (report.text, statement.text, json.dumps(metrics), json.dumps(scorecard)):
            assert str(data_dir) not in text and "jobs/" not in text
    metrics_b = client.get(f"{API}/{b}/metrics", headers=auth).json()
    assert metrics_b["model"]["file"] == "chest-cnn.pt" and metrics_b["data"]["source"] == "images/xrays"
    # the TorchScript job read the model's classes by name, in another case and order than the folders
    job_b = client.get(f"{API}/{b}", headers=auth).json()
    assert job_b["classes"] == ["normal", "PNEUMONIA", "pneumothorax"]
    same = [client.get(f"{API}/{j}/metrics", headers=auth).json()["baseline"]["accuracy"] for j in (a, b)]
    assert same[0] == pytest.approx(same[1])  # one network behind two file formats


def test_a_finished_jobs_guard_yaml_is_its_runs_guard_definition(finished):
    """guard.yaml (a file: YAML, named guard.yaml) and its JSON twin are the run's guard definition,
    with the command that serves it on this host: the run folder's absolute path, and calibration
    images asked for (the job had only test images: its squeeze threshold was cross-fitted)."""
    client, token, _, a, _, data_dir = finished
    auth = {"Authorization": f"Bearer {token}"}
    files = job_files(data_dir, Store(data_dir).job(a))
    expected = guard_definition(files.run.resolve()).to_dict()
    response = client.get(f"{API}/{a[:8]}/guard.yaml", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.headers["content-disposition"] == 'attachment; filename="guard.yaml"'
    assert yaml.safe_load(response.text) == expected
    assert response.text.startswith(f"# medrobust guard of job {a} (run {files.run_name})")
    assert "this service's host" in response.text.split("\nrun:", 1)[0]  # said in the header
    assert expected["command"] == f"medrobust guard serve --run {files.run.resolve()} --calibration DIR"
    assert expected["model"]["file"] == "model/chest-cnn" and expected["model"]["path"] == str(
        (files.upload / "model" / "chest-cnn").resolve())
    assert expected["defense"] == {"chosen": "jpeg+tv", "evaluated": ["jpeg+tv"]}
    assert expected["evaluated"]["defense"]["adaptive_accuracy"] is not None
    assert client.get(f"{API}/{a}/guard", headers=auth).json() == expected
    links = client.get(f"{API}/{a}", headers=auth).json()["links"]
    assert links["guard_yaml"] == f"{API}/{a}/guard.yaml" and links["guard"] == f"{API}/{a}/guard"
    other = client.get(f"{API}/{a}/guard.yaml", params={"defense": "tv"}, headers=auth)
    assert other.status_code == 422 and "evaluated the defenses ['jpeg+tv'], not 'tv'" in other.json()["detail"]
    assert str(data_dir) not in other.json()["detail"]


def test_a_job_with_nothing_to_guard_answers_409_with_why(service, uploads):
    """A finished job whose run evaluated no defense and no squeeze detector: 409 with the sentence."""
    job = submit(service.client, service.token, uploads.checkpoint_zip, uploads.images_zip).json()
    store = Store(service.data_dir)
    files = job_files(service.data_dir, store.job(job["id"]))
    write_finished_run(files.run, defenses=(), squeeze=None)
    assert store.finish(job["id"], None, "done")
    for route in ("guard", "guard.yaml"):
        answer = service.client.get(f"{API}/{job['id']}/{route}", headers=service.headers())
        assert answer.status_code == 409, answer.text
        assert answer.json()["detail"].startswith(f"job {job['id']}: run {files.run_name}: nothing to guard: the run "
                                                  "evaluated no defense and no reference-free detector")


def test_list_is_newest_first_and_paged(finished):
    client, token, _, a, b, _ = finished
    auth = {"Authorization": f"Bearer {token}"}
    page = client.get(API, headers=auth).json()
    assert [j["id"] for j in page["jobs"]] == [b, a] and page["total"] == 2
    second = client.get(API, params={"limit": 1, "offset": 1}, headers=auth).json()
    assert [j["id"] for j in second["jobs"]] == [a] and second["limit"] == 1
    bad = client.get(API, params={"limit": 0, "offset": "abc"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("invalid request: limit:")


def test_compare_two_finished_jobs(finished):
    client, token, _, a, b, _ = finished
    response = client.get(f"{API}/{a}/compare/{b}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.text.count("chest-cnn-") >= 2


def test_a_finished_job_is_not_compared_with_itself(finished):
    client, token, _, a, _, _ = finished
    response = client.get(f"{API}/{a}/compare/{a}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.text[:200]
    assert response.json()["detail"].startswith(f"job {a} cannot be compared with itself")


def test_events_stream_of_a_finished_job_ends(finished):
    client, token, _, a, _, _ = finished
    with client.stream("GET", f"{API}/{a}/events", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    frames = [f for f in text.split("\n\n") if f.startswith("event:")]
    assert frames[0].startswith("event: job") and json.loads(frames[0].split("data: ", 1)[1])["status"] == "done"
    assert frames[-1].startswith("event: end")


def test_tenants_see_only_their_own_jobs(finished):
    client, _, other, a, _, _ = finished
    auth = {"Authorization": f"Bearer {other}"}
    assert client.get(API, headers=auth).json() == {"jobs": [], "total": 0, "limit": 20, "offset": 0}
    for route in ("", "/events", "/report", "/statement", "/metrics", "/scorecard", "/artifacts.zip", "/guard",
                  "/guard.yaml"):
        response = client.get(f"{API}/{a}{route}", headers=auth)
        assert response.status_code == 404, route
        assert "not found" in response.json()["detail"]
    assert client.post(f"{API}/{a}/cancel", headers=auth).status_code == 404
    assert client.delete(f"{API}/{a}", headers=auth).status_code == 404


@pytest.mark.parametrize("headers, fragment", [
    ({}, "missing token"),
    ({"Authorization": "Bearer mrb_not-a-token"}, "not recognised"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing token"),
])
def test_every_api_route_needs_a_valid_token(service, headers, fragment):
    for method, route in [("get", API), ("get", f"{API}/x"), ("get", f"{API}/x/events"), ("get", f"{API}/x/report"),
                          ("get", f"{API}/x/artifacts.zip"), ("get", f"{API}/x/compare/y"), ("post", f"{API}/x/cancel"),
                          ("get", f"{API}/x/guard"), ("get", f"{API}/x/guard.yaml"),
                          ("delete", f"{API}/x"), ("post", API)]:
        response = getattr(service.client, method)(route, headers=headers)
        assert response.status_code == 401, (method, route)
        assert fragment in response.json()["detail"] and response.headers["www-authenticate"] == "Bearer"


def test_me_names_the_tenant_and_its_limits(service):
    me = service.client.get("/api/v1/me", headers=service.headers()).json()
    assert me["tenant"] == "acme" and me["active_jobs"] == 0 and me["max_active_jobs"] == ServiceLimits().max_active_jobs
    other = service.client.get("/api/v1/me", headers=service.headers(service.other_token)).json()
    assert other["tenant"] == "globex"


def test_revoked_token_is_refused_and_healthz_needs_none(service):
    assert service.client.get("/healthz").json()["status"] == "ok"
    assert service.client.get(API, headers=service.headers()).status_code == 200
    Store(service.data_dir).revoke_token(prefix=service.token[:10])
    assert service.client.get(API, headers=service.headers()).status_code == 401
    stored = (service.data_dir / "service.db").read_bytes()
    assert service.token.encode() not in stored  # only the hash is kept


def test_results_of_an_unfinished_job_answer_409_and_cancel_then_delete(service, uploads):
    response = submit(service.client, service.token, uploads.checkpoint_zip, uploads.images_zip)
    assert response.status_code == 202 and response.headers["location"].endswith(response.json()["id"])
    job = response.json()
    assert job["status"] == "queued" and job["preset"] == "quick"
    for route in ("report", "statement", "metrics", "scorecard", "artifacts.zip", "guard", "guard.yaml"):
        answer = service.client.get(f"{API}/{job['id']}/{route}", headers=service.headers())
        assert answer.status_code == 409 and "is queued" in answer.json()["detail"]
    cancelled = service.client.post(f"{API}/{job['id']}/cancel", headers=service.headers())
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = service.client.post(f"{API}/{job['id']}/cancel", headers=service.headers())
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    folder = service.data_dir / "jobs" / job["id"]
    assert folder.is_dir()
    deleted = service.client.delete(f"{API}/{job['id']}", headers=service.headers())
    assert deleted.status_code == 202 and deleted.json()["status"] == "deleted"
    assert not folder.exists()
    assert service.client.get(f"{API}/{job['id']}", headers=service.headers()).status_code == 404


def test_tenant_job_limit_answers_429(tmp_path, uploads):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    with TestClient(create_app(data_dir, ServiceLimits(max_active_jobs=1))) as client:
        assert submit(client, token, uploads.checkpoint_zip, uploads.images_zip).status_code == 202
        second = submit(client, token, uploads.checkpoint_zip, uploads.images_zip)
        assert second.status_code == 429 and "queued or running" in second.json()["detail"]


def test_tenant_storage_quota_answers_413(tmp_path, uploads):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    with TestClient(create_app(data_dir, ServiceLimits(max_stored_bytes=uploads.images_zip.stat().st_size))) as client:
        response = submit(client, token, uploads.checkpoint_zip, uploads.images_zip)
        assert response.status_code == 413 and "you may store" in response.json()["detail"]
    assert not any((data_dir / "jobs").glob("*")) if (data_dir / "jobs").exists() else True


# ---- hostile uploads ------------------------------------------------------------------------------
def _post_images(service, uploads, archive: bytes, name: str = "images.zip", **fields):
    with uploads.checkpoint_zip.open("rb") as model:
        return service.client.post(API, headers=service.headers(), data=fields,
                                    files={"model": ("chest.zip", model), "images": (name, archive)})


def _nothing_left(service) -> None:
    jobs = service.data_dir / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())
    incoming = service.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())


def test_zip_slip_member_is_refused(service, uploads, tmp_path):
    png = (uploads.images_dir / "Normal").glob("*.png").__next__().read_bytes()
    response = _post_images(service, uploads, zip_bytes({"Normal/a.png": png, "../../escaped.png": png}))
    assert response.status_code == 422 and "escaped.png" in response.json()["detail"]
    assert not (service.data_dir.parent / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
    _nothing_left(service)


def test_symlink_member_is_refused(service, uploads):
    png = next((uploads.images_dir / "Normal").glob("*.png")).read_bytes()
    archive = zip_bytes({"Normal/a.png": png, "Normal/link.png": b"/etc/passwd"},
                        modes={"Normal/link.png": stat.S_IFLNK | 0o777})
    response = _post_images(service, uploads, archive)
    assert response.status_code == 422 and "link" in response.json()["detail"].lower()
    _nothing_left(service)


def test_zip_bomb_is_refused_before_extraction(tmp_path, uploads):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    bomb = zip_bytes({"Normal/a.png": bytes(8 * 2**20)})  # 8 MiB of zeros: ratio about 1000
    limits = ServiceLimits(ratio_checked_above_bytes=2**20)
    with TestClient(create_app(data_dir, limits)) as client, uploads.checkpoint_zip.open("rb") as model:
        response = client.post(API, headers={"Authorization": f"Bearer {token}"},
                               files={"model": ("chest.zip", model), "images": ("bomb.zip", bomb)})
    assert response.status_code == 422 and "ratio" in response.json()["detail"]
    assert not list(data_dir.rglob("a.png"))


def test_oversize_upload_is_refused_while_streaming(tmp_path, uploads):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    with TestClient(create_app(data_dir, ServiceLimits(max_images_bytes=64 * 1024))) as client:
        with uploads.checkpoint_zip.open("rb") as model:
            response = client.post(API, headers={"Authorization": f"Bearer {token}"},
                                   files={"model": ("chest.zip", model), "images": ("big.zip", bytes(1_000_000))})
    assert response.status_code == 413 and "--max-images-mb" in response.json()["detail"]
    assert not list(data_dir.rglob("images*"))


class _TouchesWhenUnpickled:
    """Unpickling this calls Path.touch(marker): proof of whether a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("filename, fragment", [("model.pt", "never unpickles"), ("model.pth", "never unpickles"),
                                                ("model.keras", "not a Keras 3"), ("model.onnx", "ONNX")])
def test_pickled_model_is_refused_and_never_loaded(service, uploads, tmp_path, filename, fragment):
    marker = tmp_path / "unpickled"
    path = tmp_path / filename
    torch.save({"weights": torch.zeros(2), "payload": _TouchesWhenUnpickled(marker)}, path)
    with path.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"classes": "Normal,Pneumonia,Pneumothorax"},
                                        files={"model": (filename, model), "images": ("x.zip", images)})
    assert response.status_code == 422 and fragment in response.json()["detail"], response.json()
    Worker(service.data_dir, poll_s=0.01).run(once=True)  # nothing was queued for a worker to load either
    assert not marker.exists()
    _nothing_left(service)


@pytest.mark.parametrize("filename", ["model.h5", "model.pkl", "model"])
def test_unknown_model_extension_is_refused(service, uploads, filename):
    with uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"classes": "Normal,Pneumonia,Pneumothorax"},
                                        files={"model": (filename, b"\x80\x04K\x01."), "images": ("x.zip", images)})
    assert response.status_code == 415 and "not a format the service reads" in response.json()["detail"]
    _nothing_left(service)


@pytest.mark.parametrize("config, fragment", [
    ("data: {source: /etc}\n", "data.source"),
    ("output_dir: /tmp/elsewhere\n", "output_dir"),
    ("model: {load: {path: /srv/other.pt}}\n", "model"),
    ("model: {load: {classes: [Normal, Pneumonia, Pneumothorax]}}\n", "form fields classes"),
    ("detectors: {squeeze: {calibration: /srv/clean}}\n", "detectors.squeeze.calibration"),
    ("surrogates: [{name: s, load: {path: /srv/s.pt}}]\n", "surrogates[0]"),
    ("surrogates: [{name: s, train: {arch: small-cnn, weights: /etc/passwd}}]\n", "surrogates[0].train.weights"),
    ("attacks: [{name: pgd, steps_typo: 3}]\n", "invalid configuration"),
    ("a: &x [1]\nb: *x\n", "anchor"),
    ("execution: {engine: ray, address: 'ray://10.0.0.9:10001'}\n", "execution"),
])
def test_config_naming_a_path_or_invalid_is_refused(service, uploads, config, fragment):
    with uploads.checkpoint_zip.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"config": config},
                                        files={"model": ("m.zip", model), "images": ("x.zip", images)})
    assert response.status_code == 422 and fragment in response.json()["detail"], response.json()
    _nothing_left(service)


def test_a_valid_config_is_queued_with_it(service, uploads):
    config = "attacks: [{name: fgsm, params: {eps: 4/255}}]\ndefenses: []\ndetectors: {squeeze: {enabled: false}}\n"
    with uploads.checkpoint_zip.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"config": config},
                                        files={"model": ("m.zip", model), "images": ("x.zip", images)})
    assert response.status_code == 202, response.json()
    assert response.json()["preset"] is None


@pytest.mark.parametrize("fields, status, fragment", [
    ({"preset": "fast"}, 422, "preset"),
    ({"preset": "quick", "config": "defenses: []"}, 422, "not both"),
    ({"classes": "Normal,Pneumonia"}, 422, "checkpoint"),
    ({"input_size": "huge"}, 422, "input_size"),
    ({"intensity": "hu"}, 422, "intensity: unknown intensity convention 'hu'"),
    ({"output_kind": "logits"}, 422, "output_kind: unknown output kind"),
    ({"normal_class": "Healthy"}, 422, "normal class"),
    ({"colour": "red"}, 422, "colour"),
])
def test_bad_fields_are_refused_before_queueing(service, uploads, fields, status, fragment):
    with uploads.checkpoint_zip.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data=fields,
                                        files={"model": ("m.zip", model), "images": ("x.zip", images)})
    assert response.status_code == status and fragment in response.json()["detail"], response.json()
    _nothing_left(service)


def test_unknown_class_folder_and_missing_classes_are_refused(service, uploads):
    png = next((uploads.images_dir / "Normal").glob("*.png")).read_bytes()
    response = _post_images(service, uploads, zip_bytes({"Normal/a.png": png, "Effusion/b.png": png}))
    assert response.status_code == 422 and "Effusion" in response.json()["detail"]
    with uploads.torchscript.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(),
                                        files={"model": ("m.pt", model), "images": ("x.zip", images)})
    assert response.status_code == 422 and "classes" in response.json()["detail"]
    _nothing_left(service)


def test_a_model_file_without_its_intensity_is_refused_before_queueing(service, uploads):
    """Only a checkpoint records how its network expects its input scaled; a TorchScript, Keras or
    ONNX upload without the intensity field is refused with the choices, and nothing is queued."""
    with uploads.torchscript.open("rb") as model, uploads.images_zip.open("rb") as images:
        response = service.client.post(API, headers=service.headers(), data={"classes": "Normal,Pneumonia,Pneumothorax"},
                                        files={"model": ("chest v2.pt", model), "images": ("x.zip", images)})
    detail = response.json()["detail"]
    assert response.status_code == 422, detail
    assert detail.startswith("intensity: chest v2.pt: the file does not record how the model expects its input scaled, "
                             "so give the intensity convention its training used (the form's field intensity) - unit: ")
    assert "imagenet: (x - mean) / std" in detail and "symmetric: [-1, 1]" in detail and "byte: [0, 255]" in detail
    _nothing_left(service)


def test_openapi_documents_the_upload(service):
    schema = service.client.get("/openapi.json").json()
    body = schema["paths"][API]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"model", "images", "classes", "preset", "config"} <= set(body["properties"])
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # works offline
    asset = service.client.get("/docs-assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
