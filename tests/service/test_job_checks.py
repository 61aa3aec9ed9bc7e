"""What the web process checks before a job is queued, without loading a model or importing torch
(issue 25, points 8, 10, 12): a configuration's attack, defense and squeezer specs by name and
parameters; its work parameters against the service's ceilings; the class map field (and the
hints that name the form's fields, not the command line's options); the job's name and model
version; and what the job JSON says about a queued job (its place in the queue, its limits), by
its full id or a unique prefix of it."""

from __future__ import annotations

import io
import zipfile

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.limits import WORK_CEILINGS, ServiceLimits  # noqa: E402
from medrobust.service.store import Store  # noqa: E402

API = "/api/v1/jobs"


def post(client, token: str, uploads, model=None, images=None, **fields):
    model = model or ("chest-cnn.zip", uploads.checkpoint_zip.read_bytes())
    images = images or ("xrays.zip", uploads.images_zip.read_bytes())
    return client.post(API, headers={"Authorization": f"Bearer {token}"}, data=fields,
                       files={"model": model, "images": images})


def _nothing_queued(service) -> None:
    jobs = service.data_dir / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())
    assert service.client.get(API, headers=service.headers()).json()["total"] == 0


@pytest.mark.parametrize("config, fragment", [
    ("attacks: [{name: pgd-typo}]\n",
     "config: attacks[0] (pgd-typo): unknown attack 'pgd-typo'; known: apgd, autoattack, block-shuffle"),
    ("attacks: [{name: pgd, params: {stpes: 10}}]\n", "attacks[0] (pgd): attack pgd: unknown parameter(s) ['stpes']"),
    ("attacks: [{name: 'pgd:steps=ten'}]\n", "parameter steps='ten' is not a valid int"),
    ("attacks: [{name: pgd, params: {eps: 80/255}}]\n", "above the 64/255 limit"),
    ("attacks: [{name: pgd, eps_sweep: [4/255, 100/255]}]\n", "attacks[0].eps_sweep (0.3922)"),
    ("defenses: [jpeg+blur]\n", "config: defenses[0]: unknown defense 'blur'"),
    ("defenses: ['jpeg:qualty=50']\n", "defenses[0]: defense jpeg: unknown parameter(s) ['qualty']"),
    ("detectors: {squeeze: {squeezers: ['bits:bitz=3']}}\n", "detectors.squeeze.squeezers[0]: defense bits"),
    ("adaptive: {attack: pgd, params: {steps: many}}\n", "config: adaptive: attack pgd: parameter steps='many'"),
])
def test_a_bad_component_spec_is_refused_before_queueing(service, uploads, config, fragment):
    response = post(service.client, service.token, uploads, config=config)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"], response.json()
    _nothing_queued(service)


@pytest.mark.parametrize("config, fragment", [
    ("attacks: [{name: pgd, params: {steps: 1000000000}}]\n",
     "config: attacks[0] (pgd): steps=1000000000 is above this service's ceiling of 1000 for steps"),
    ("attacks: [{name: 'sia:n_copies=5000'}]\n", "n_copies=5000 is above this service's ceiling of 100"),
    ("attacks: [{name: square, params: {queries: 10000000}}]\n", "queries=10000000 is above"),
    ("adaptive: {max_steps: 100000}\n", "config: adaptive.max_steps=100000 is above this service's ceiling of 1000 "
                                        "for steps"),
    ("adaptive: {params: {steps: 5000}}\n", "config: adaptive: steps=5000 is above"),
    ("adaptive: {restarts: 15}\n", "adaptive.restarts=15 is above this service's ceiling of 10"),
    ("adaptive: {max_eot_samples: 5000}\n", "adaptive.max_eot_samples=5000 is above this service's ceiling of 200 "
                                            "for eot_samples"),
    ("adaptive: {square_queries: 1000000}\n", "adaptive.square_queries=1000000 is above"),
    ("defenses: ['tv:max_iter=1000000']\n", "defenses[0]: max_iter=1000000 is above"),
])
def test_work_above_the_ceilings_is_refused_with_the_field_named(service, uploads, config, fragment):
    response = post(service.client, service.token, uploads, config=config)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"], response.json()
    assert "ask the service's administrator to raise it" in response.json()["detail"]
    _nothing_queued(service)


def test_an_administrator_raises_a_ceiling(tmp_path, uploads):
    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    limits = ServiceLimits(ceilings={**WORK_CEILINGS, "steps": 2_000_000_000})
    with TestClient(create_app(data_dir, limits)) as client:
        response = post(client, token, uploads, config="attacks: [{name: pgd, params: {steps: 1000000000}}]\n")
        assert response.status_code == 202, response.text
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["ceilings"]["steps"] == 2_000_000_000 and me["ceilings"]["n_copies"] == 100


@pytest.mark.parametrize("preset", ["quick", "standard", "thorough"])
def test_every_preset_is_within_the_default_ceilings(preset):
    from medrobust.layer.presets import preset_settings
    from medrobust.service.job_config import check_job_config

    for differentiable in (True, False):
        raw = preset_settings(preset, differentiable=differentiable)
        check_job_config(raw, "model.pt", "images", {"classes": ["A", "B"]}, WORK_CEILINGS)


def _renamed_images(uploads, names: dict[str, str]) -> bytes:
    """The phantom images with their class folders renamed (``Normal`` -> ``NORMAL`` ...)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for cls, folder in names.items():
            for path in sorted((uploads.images_dir / cls).glob("*.png")):
                archive.writestr(f"{folder}/{path.name}", path.read_bytes())
    return out.getvalue()


FOLDERS = {"Normal": "NORMAL", "Pneumonia": "PNEU", "Pneumothorax": "PTX"}


def test_the_class_map_field_pairs_folders_with_the_model_classes(service, uploads):
    images = ("xrays.zip", _renamed_images(uploads, FOLDERS))
    response = post(service.client, service.token, uploads, images=images,
                    class_map=" NORMAL=Normal, PNEU=Pneumonia,PTX=Pneumothorax ", normal_class="Normal")
    assert response.status_code == 202, response.text
    assert response.json()["class_map"] == {"NORMAL": "Normal", "PNEU": "Pneumonia", "PTX": "Pneumothorax"}
    request = Store(service.data_dir).job(response.json()["id"])["request"]
    assert '"class_map": {"NORMAL": "Normal"' in request  # what the worker passes to mr.evaluate


def test_class_hints_on_the_service_name_the_form_fields(service, uploads):
    images = ("xrays.zip", _renamed_images(uploads, FOLDERS))
    unmapped = post(service.client, service.token, uploads, images=images).json()["detail"]
    assert "['PNEU', 'PTX'] are not model (chest-cnn.zip) classes" in unmapped, unmapped
    assert "the class map field (class_map: FOLDER=CLASS pairs, comma-separated" in unmapped, unmapped
    normal = post(service.client, service.token, uploads, normal_class="Healthy").json()["detail"]
    assert "set the normal class field (normal_class) to one of them" in normal, normal
    wrong = post(service.client, service.token, uploads, images=images, class_map="NORMAL=Normal,PNEU=Pneumonia,PTX=Tumour")
    assert "class_map maps images (xrays.zip) class 'PTX' to 'Tumour'" in wrong.json()["detail"]
    malformed = post(service.client, service.token, uploads, images=images, class_map="NORMAL")
    assert malformed.status_code == 422
    assert malformed.json()["detail"] == ("class_map: 'NORMAL' must look like FOLDER=CLASS (e.g. NORMAL=Normal), pairs "
                                          "separated by commas")
    for detail in (unmapped, normal, wrong.json()["detail"]):
        assert "--class-map" not in detail and "--normal-class" not in detail and "data.class_map" not in detail
    _nothing_queued(service)


def test_a_class_map_in_the_configuration_is_used_too(service, uploads):
    images = ("xrays.zip", _renamed_images(uploads, FOLDERS))
    config = ("data: {class_map: {NORMAL: Normal, PNEU: Pneumonia, PTX: Pneumothorax}}\n"
              "attacks: [{name: fgsm}]\ndefenses: []\n")
    assert post(service.client, service.token, uploads, images=images, config=config).status_code == 202
    both = post(service.client, service.token, uploads, images=images, config=config, class_map="NORMAL=Normal")
    assert both.status_code == 422 and "class_map: given both as a field and as config data.class_map" in both.text


def test_a_job_has_a_name_and_a_model_version(service, uploads):
    for field, value in (("name", "x" * 121), ("model_version", "1\x00")):
        refused = post(service.client, service.token, uploads, **{field: value})
        assert refused.status_code == 422 and refused.json()["detail"].startswith(f"{field}: give one line"), refused.text
    response = post(service.client, service.token, uploads, name="  Chest triage\tv2 on site B ", model_version="2.1.0")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["name"] == "Chest triage v2 on site B" and job["model_version"] == "2.1.0"
    unnamed = post(service.client, service.token, uploads).json()
    assert unnamed["name"] is None and unnamed["model_version"] is None


def test_queued_jobs_show_their_place_in_the_queue_and_their_limits(tmp_path, uploads):
    data_dir = tmp_path / "service"
    store = Store(data_dir)
    token, other = store.create_token("acme"), store.create_token("globex")
    store.set_tenant_job_seconds("globex", 600.0)
    with TestClient(create_app(data_dir, ServiceLimits(max_job_seconds=3600, max_attempts=4))) as client:
        first = post(client, token, uploads).json()
        second = post(client, other, uploads).json()
        third = post(client, token, uploads).json()
        assert [first["queue_position"], second["queue_position"], third["queue_position"]] == [1, 2, 3]
        assert first["time_limit_seconds"] == 3600 and second["time_limit_seconds"] == 600
        assert first["max_attempts"] == 4 and first["compute_seconds"] == 0 and first["attempts"] == 0
        auth = {"Authorization": f"Bearer {token}"}
        listed = {j["id"]: j["queue_position"] for j in client.get(API, headers=auth).json()["jobs"]}
        assert listed == {first["id"]: 1, third["id"]: 3}
        assert client.post(f"{API}/{first['id']}/cancel", headers=auth).json()["queue_position"] is None
        assert client.get(f"{API}/{third['id']}", headers=auth).json()["queue_position"] == 2
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {other}"}).json()
        assert me["max_job_seconds"] == 600 and me["max_attempts"] == 4


def test_a_job_answers_to_a_unique_prefix_of_its_id(service, uploads):
    job = post(service.client, service.token, uploads).json()
    for prefix in (job["id"][:8], job["id"][:6], job["id"][:8].upper()):
        found = service.client.get(f"{API}/{prefix}", headers=service.headers())
        assert found.status_code == 200 and found.json()["id"] == job["id"], prefix
    assert service.client.get(f"{API}/{job['id'][:5]}", headers=service.headers()).status_code == 404
    stranger = service.client.get(f"{API}/{job['id'][:8]}", headers=service.headers(service.other_token))
    assert stranger.status_code == 404
    cancelled = service.client.post(f"{API}/{job['id'][:8]}/cancel", headers=service.headers())
    assert cancelled.status_code == 202 and cancelled.json()["id"] == job["id"]
    assert service.client.delete(f"{API}/{job['id'][:8]}", headers=service.headers()).json()["status"] == "deleted"


def test_an_ambiguous_prefix_says_so(service, uploads):
    store = Store(service.data_dir)
    tenant = store.tenant_for_token(service.token)
    for job_id in ("abcdef0011223344", "abcdef0055667788"):
        store.add_job(job_id, tenant, {"model_file": "m.pt", "run_name": "m-" + job_id[:8]}, 0, 10)
    answer = service.client.get(f"{API}/abcdef00", headers=service.headers())
    assert answer.status_code == 404 and "several of your jobs start with it" in answer.json()["detail"]
    assert service.client.get(f"{API}/abcdef0011", headers=service.headers()).json()["id"] == "abcdef0011223344"
