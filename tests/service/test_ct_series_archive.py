"""The service's upload of CT (issue 29): a zip of class folders of DICOM series (slices with
shuffled, suffix-less names) and NIfTI volumes is accepted, a series counts as one image against
the job's image limit, and what is extracted reads as CT volumes in HU."""

from __future__ import annotations

import dataclasses
import random
import zipfile

import pytest

from medrobust.data.phantom.ct_export import write_ct_phantom_dataset
from medrobust.service.limits import ServiceLimits
from medrobust.service.upload_archives import ArchiveRefused, extract_images_archive


@pytest.fixture(scope="module")
def ct_zip(tmp_path_factory):
    """ct.zip: ct/<class>/<series>/IMnnnnnnnn (4 slices each, names shuffled), one head per class."""
    tree = tmp_path_factory.mktemp("ct_upload")
    write_ct_phantom_dataset(tree / "ct", per_class=1, size=16, depth=4, fmt="dicom", seed=1)
    rng = random.Random(0)
    archive = tree / "ct.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tree / "ct").rglob("slice-*.dcm")):
            name = path.relative_to(tree).parent / f"IM{rng.randrange(10**8):08d}"
            zf.write(path, name.as_posix())
        zf.write(tree / "ct" / "manifest.csv", "ct/manifest.csv")
    return archive


def test_a_zip_of_dicom_series_is_accepted_and_reads_as_ct_volumes(ct_zip, tmp_path):
    from medrobust.data.folders import folder_dataset
    from medrobust.data.stored_grid import CT_HU

    extracted = extract_images_archive(ct_zip, tmp_path / "job", ServiceLimits())
    assert extracted.classes == ["haemorrhage", "infarct", "normal"] and extracted.kept == 12
    assert extracted.root == tmp_path / "job" / "ct" and extracted.ignored == ["ct/manifest.csv"]
    dataset = folder_dataset(extracted.root)
    x, _, ids = dataset.load()
    assert dataset.grid == CT_HU and x.shape == (3, 1, 4, 16, 16) and not dataset.skipped
    assert sorted(ids) == ["haemorrhage/ct-000001", "infarct/ct-000002", "normal/ct-000000"]


def test_a_series_counts_as_one_image_against_the_job_limit(ct_zip, tmp_path):
    three = dataclasses.replace(ServiceLimits(), max_images=3)
    assert extract_images_archive(ct_zip, tmp_path / "ok", three).kept == 12  # 3 series of 4 slices: 3 images
    two = dataclasses.replace(ServiceLimits(), max_images=2)
    with pytest.raises(ArchiveRefused, match="holds 3 images, over the 2"):
        extract_images_archive(ct_zip, tmp_path / "refused", two)


@pytest.fixture(scope="module")
def user_volume_onnx(tmp_path_factory):
    """A user's tiny 3-D CNN exported to ONNX at 4 x 16 x 16 (the archive's volumes' shape)."""
    pytest.importorskip("onnxruntime")
    from tests.foreign_ct import export_user_volume_model

    return export_user_volume_model(tmp_path_factory.mktemp("user_model"), (4, 16, 16)).onnx


def test_the_form_takes_a_ct_window_and_a_volume_size(service, ct_zip, user_volume_onnx):
    from medrobust.service.store import Store
    from tests.service.test_api import submit

    refused = submit(service.client, service.token, user_volume_onnx, ct_zip, classes="haemorrhage,infarct,normal",
                     window="40,80", intensity="unit")
    assert refused.status_code == 422 and "window: both intensity 'unit' and window" in refused.json()["detail"]
    bad = submit(service.client, service.token, user_volume_onnx, ct_zip, classes="haemorrhage,infarct,normal",
                 window="40")
    assert bad.status_code == 422 and bad.json()["detail"].startswith("window: '40': "), bad.json()
    accepted = submit(service.client, service.token, user_volume_onnx, ct_zip, classes="haemorrhage,infarct,normal",
                      window="40,80", input_size="4,16,16", preset="quick")
    assert accepted.status_code == 202, accepted.json()
    request = Store(service.data_dir).job(accepted.json()["id"])["request"]
    assert '"intensity": "hu_windows:40,80"' in request and '"input_size": [4, 16, 16]' in request


@pytest.mark.slow  # a whole quick-preset job on volumes: about a minute on 2 shared cores
def test_a_ct_job_from_the_form_finishes_with_budgets_in_hu(service, ct_zip, user_volume_onnx):
    import json

    from medrobust.service.worker import Worker
    from tests.service.test_api import API, submit

    accepted = submit(service.client, service.token, user_volume_onnx, ct_zip, classes="haemorrhage,infarct,normal",
                      window="40,80", preset="quick")
    assert accepted.status_code == 202, accepted.json()
    Worker(service.data_dir, poll_s=0.05).run(once=True)
    auth = service.headers()
    job = service.client.get(f"{API}/{accepted.json()['id']}", headers=auth).json()
    assert job["status"] == "done", job["error"]
    metrics = service.client.get(f"{API}/{job['id']}/metrics", headers=auth).json()
    assert metrics["config"]["model"]["load"]["intensity"] == "hu_windows:40,80"
    assert metrics["data"]["grid"]["unit"] == "HU" and metrics["data"]["size"] == 16
    assert [round(e * 4095) for e in metrics["config"]["grid"]] == [2, 4, 8, 16]
    assert json.dumps(metrics["config"]["left_out"]).count("refuses volumes") == 2
