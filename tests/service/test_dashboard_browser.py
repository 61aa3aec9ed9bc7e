"""The dashboard in a real browser (headless Chromium through Playwright) against the real
processes (``medrobust serve`` and a worker): sign in (a wrong token, then the right one),
upload two models with their images (one named, with its version; one whose folders are paired
with its classes by the class map field, after a refusal whose hint names that field, with a
configuration of no defense and no detector), follow both jobs live to ``done`` (the "queued"
banner follows its job and goes), read the headline, see "Serve this guard" (the first job's
command, figures and guard.yaml; "nothing to guard" for the second), open the report, the
statement and the comparison in the sandboxed viewer, download the artifacts, see a third job's
place in the queue and cancel it, delete a job and sign out, with no console error and no failed
request other than the deliberate 401 and 422, the 409 of the guard of the job with nothing to
guard (and those a reload aborts in flight)."""

from __future__ import annotations

import io
import re
import shutil
import signal
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.progress_wait import wait_for
from tests.service.conftest import LEAN_CONFIG

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH (chromium or chromium-browser)"),
]

NUMBER = re.compile(r"^\d+(\.\d+)?\b")  # "50.0 / 100"
NOTHING_TO_GUARD = "attacks: [{name: pgd, params: {steps: 5}, eps_sweep: [1/255, 2/255, 4/255, 8/255]}]\ndefenses: []\n"
"""A job's configuration without a defense or a detector: its run has nothing to guard."""
FOLDERS = {"Normal": "NORMAL", "Pneumonia": "PNEU", "Pneumothorax": "PTX"}


def fill(page, model: Path, images: Path, classes: str = "", input_size: str = "", name: str = "", version: str = "",
         class_map: str = "", intensity: str = "") -> None:
    page.set_input_files("#model", str(model))
    page.set_input_files("#images", str(images))
    for field, value in (("#classes", classes), ("#input_size", input_size), ("#name", name),
                         ("#model_version", version), ("#class_map", class_map)):
        page.fill(field, value)
    page.select_option("#intensity", intensity)
    page.select_option("#preset", "quick")


def upload(page, model: Path, images: Path, **fields: str) -> str:
    """Fill the upload form, submit it and return the new job's id (from its row)."""
    before = set(page.locator("#jobs [data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)"))
    fill(page, model, images, **fields)
    page.click("#submit")
    expect(page.locator("#jobs [data-job-id]")).to_have_count(len(before) + 1, timeout=60_000)
    after = page.locator("#jobs [data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    (job_id,) = set(after) - before
    return job_id


def wait_until_finished(service, job_id: str) -> dict:
    """The job once it has finished, waiting on its progress (not on a fixed total)."""
    auth = {"Authorization": f"Bearer {service.token}"}
    return wait_for(lambda: httpx.get(f"{service.base_url}/api/v1/jobs/{job_id}", headers=auth, timeout=10).json(),
                    lambda j: j["status"] not in ("queued", "running"),
                    progress=lambda j: (j["status"], j["stage"], j["stage_done"], j["stages_finished"]),
                    what=f"job {job_id}")


def renamed_images(uploads, out: Path) -> Path:
    """The phantom images with other class folder names (NORMAL, PNEU, PTX)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for cls, folder in FOLDERS.items():
            for path in sorted((uploads.images_dir / cls).glob("*.png")):
                archive.writestr(f"{folder}/{path.name}", path.read_bytes())
        archive.writestr("README.txt", "not an image: listed as ignored\n")
    out.write_bytes(buffer.getvalue())
    return out


def open_in_viewer(page, button, title_fragment: str) -> str:
    """Click a row's button, wait for the viewer to show a document, return its srcdoc."""
    button.click()
    expect(page.locator("#viewer")).to_be_visible(timeout=30_000)
    frame = page.locator("#viewer-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(frame).to_have_attribute("srcdoc", re.compile(re.escape(title_fragment)), timeout=30_000)
    # the document is rendered inside the frame too
    expect(page.frame_locator("#viewer-frame").locator("h1").first).to_contain_text(title_fragment.split(":")[0])
    return frame.get_attribute("srcdoc")


def test_dashboard_end_to_end(live_service, tmp_path):
    uploads = live_service.uploads
    console_errors: list[str] = []
    bad_responses: list[str] = []
    failed_requests: list[str] = []
    # A reload aborts the page's requests still in flight (a poll, the tenant label): Chromium
    # reports those as net::ERR_ABORTED. That is the browser's doing, so only requests that fail
    # while no reload is under way count. Playwright delivers a reload's aborts before reload()
    # returns (they precede the new document's load event on the same connection).
    reloading = [False]
    aborted_by_reload: list[str] = []

    def on_request_failed(request):
        line = f"{request.method} {request.url}: {request.failure}"
        if reloading[0] and request.failure == "net::ERR_ABORTED" and request.method == "GET":
            aborted_by_reload.append(line)
        else:
            failed_requests.append(line)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
            page.on("requestfailed", on_request_failed)
            page.on("response", lambda r: bad_responses.append(f"{r.status} {r.request.method} {r.url}")
                    if r.status >= 400 else None)
            page.on("dialog", lambda d: d.accept())  # the delete confirmation

            page.goto(live_service.base_url + "/")
            expect(page.locator("#token")).to_be_visible()
            expect(page.locator("#upload-form")).to_be_hidden()

            # a wrong token: the server's detail is shown and nothing is kept
            page.fill("#token", "not-a-token")
            page.click("#signin")
            expect(page.locator("#message")).to_be_visible()
            expect(page.locator("#message")).not_to_be_empty()
            assert page.evaluate("sessionStorage.length") == 0
            expect(page.locator("#upload-form")).to_be_hidden()

            # the right one: the token goes to sessionStorage only, never to a cookie or the URL
            page.fill("#token", live_service.token)
            page.click("#signin")
            expect(page.locator("#upload-form")).to_be_visible()
            expect(page.locator("#signout")).to_be_visible()
            expect(page.locator("#session-label")).to_contain_text("signed in as acme · 0 of 2 jobs")
            assert page.evaluate("Object.values(sessionStorage)") == [live_service.token]
            assert page.evaluate("document.cookie") == ""
            assert live_service.token not in page.url

            # two jobs: the zipped checkpoint (classes from the checkpoint), named, with its version
            # (and the lean configuration of the service tests, in the form's YAML field)...
            page.click("summary:has-text('Advanced: YAML configuration')")
            page.fill("#config", LEAN_CONFIG)
            first = upload(page, uploads.checkpoint_zip, uploads.images_zip, name="Chest triage on site B",
                           version="2.1.0")
            page.fill("#config", "")
            page.click("summary:has-text('Advanced: YAML configuration')")
            expect(page.locator("#message")).to_contain_text(f"Job {first} (Chest triage on site B)")
            # ...and the TorchScript export on images whose folders are named otherwise: refused with a hint
            # that names the form's class map field, then accepted with it
            renamed = renamed_images(uploads, tmp_path / "xrays-renamed.zip")
            fill(page, uploads.torchscript, renamed, classes="Normal, Pneumonia, Pneumothorax", input_size="32",
                 intensity="unit")
            page.click("#submit")
            expect(page.locator("#message")).to_contain_text("the class map field (class_map: FOLDER=CLASS pairs")
            expect(page.locator("#message")).not_to_contain_text("--class-map")
            # (with a configuration of its own: one attack, no defense and no detector, so nothing to guard)
            page.click("summary:has-text('Advanced: YAML configuration')")
            page.fill("#config", NOTHING_TO_GUARD)
            second = upload(page, uploads.torchscript, renamed, classes="Normal, Pneumonia, Pneumothorax",
                            input_size="32", intensity="unit",
                            class_map="NORMAL=Normal, PNEU=Pneumonia, PTX=Pneumothorax")
            page.fill("#config", "")
            expect(page.locator("#upload-progress")).to_have_attribute("value", "1")
            expect(page.locator("#message")).to_contain_text(f"Job {second} (chest-cnn.pt on xrays-renamed.zip)")
            rows = {job_id: page.locator(f'#jobs [data-job-id="{job_id}"]') for job_id in (first, second)}
            # newest first
            assert page.locator("#jobs [data-job-id]").first.get_attribute("data-job-id") == second
            # the card shows the job's name, its model's version and the id the API answers to
            expect(rows[first].locator(".job-name")).to_have_text("Chest triage on site B")
            expect(rows[first].locator(".job-version")).to_have_text("version 2.1.0")
            shown_id = rows[first].locator(".job-id").inner_text()
            auth = {"Authorization": f"Bearer {live_service.token}"}
            assert httpx.get(f"{live_service.base_url}/api/v1/jobs/{shown_id}", headers=auth,
                             timeout=10).json()["id"] == first

            # a running job shows its live progress (stage, bar) from the event stream
            wait_for(lambda: (page.evaluate(
                "() => document.querySelector('#jobs .progress progress[value]') !== null"),
                [httpx.get(f"{live_service.base_url}/api/v1/jobs/{j}", headers=auth, timeout=10).json() for j in rows]),
                lambda seen: seen[0] or all(j["status"] not in ("queued", "running") for j in seen[1]),
                progress=lambda seen: [(j["status"], j["stage"], j["stage_done"]) for j in seen[1]],
                what="a progress bar or the jobs' end")

            for job_id, row in rows.items():
                assert wait_until_finished(live_service, job_id)["status"] == "done"
                expect(row.locator(".status")).to_have_text("done", timeout=30_000)
                score = row.locator(".headline .overall-score")
                expect(score).to_have_text(NUMBER)
                assert row.locator(".headline .rows li").count() >= 1
                expect(row.locator(".files-ignored summary")).to_have_text("1 file ignored")
                text = row.inner_text()
                assert "null" not in text and "undefined" not in text and "[object" not in text, text

            # "Serve this guard": the command (run folder on this host; calibration images, since the
            # job's squeeze threshold was cross-fitted), the figures in one line, and guard.yaml
            guard = rows[first].locator(".guard")
            (run_folder,) = (live_service.data_dir / "jobs" / first).glob("chest-cnn-*")
            command = f"medrobust guard serve --run {run_folder.resolve()} --calibration DIR"
            expect(guard.locator(".guard-command")).to_have_text(command, timeout=30_000)
            expect(guard.locator(".guard-figures")).to_contain_text(re.compile(
                r"^Evaluated: jpeg\+tv: \d+\.\d% accuracy under adaptive attack .*; squeeze detector: flags \d+\.\d% of "
                r"attacked images .* at \d+\.\d% false positives on clean images \(target 5\.0%\)$"))
            expect(guard.locator(".guard-calibration")).to_contain_text("DIR: a folder of clean images")
            with page.expect_download() as download:
                guard.locator(".download-guard").click()
            assert download.value.suggested_filename == "guard.yaml"
            assert yaml.safe_load(Path(download.value.path()).read_text())["command"] == command
            expect(rows[second].locator(".guard .guard-unavailable")).to_contain_text(
                "nothing to guard: the run evaluated no defense and no reference-free detector", timeout=30_000)
            expect(rows[second].locator(".guard-command")).to_have_count(0)

            row = rows[first]
            srcdoc = open_in_viewer(page, row.locator(".open-report"), "Robustness report: ")
            assert "chest-cnn" in srcdoc
            with page.expect_popup() as popup:
                page.click("#viewer-open")
            tab = popup.value
            tab.wait_for_load_state()
            assert tab.url.startswith("blob:") and tab.title().startswith("Robustness report: ")
            tab.close()
            page.click("#viewer-close")
            expect(page.locator("#viewer")).to_be_hidden()

            open_in_viewer(page, row.locator(".open-statement"), "Adversarial robustness statement")
            page.keyboard.press("Escape")
            expect(page.locator("#viewer")).to_be_hidden()

            # the scorecard JSON, pretty-printed (as text) in the same viewer
            row.locator(".open-scorecard").click()
            expect(page.locator("#viewer-frame")).to_have_attribute("srcdoc", re.compile('"overall_text"'), timeout=30_000)
            page.click("#viewer-close")
            expect(page.locator("#viewer")).to_be_hidden()

            with page.expect_download() as download:
                row.locator(".download-artifacts").click()
            assert download.value.suggested_filename == f"medrobust-{first}.zip"

            # compare: enabled only once exactly two finished jobs are ticked
            expect(page.locator("#compare")).to_be_disabled()
            rows[first].locator(".compare-select").check()
            expect(page.locator("#compare")).to_be_disabled()
            rows[second].locator(".compare-select").check()
            expect(page.locator("#compare")).to_be_enabled()
            open_in_viewer(page, page.locator("#compare"), "Robustness scorecards compared")
            page.click("#viewer-close")
            expect(page.locator("#viewer")).to_be_hidden()

            # the dashboard with its finished jobs, for a person to look at
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            shutil.copyfile(screenshot, "/tmp/dashboard.png")

            # the banner followed the last job submitted, and went once it was done
            expect(page.locator("#message")).to_be_hidden()

            # a third job, held in the queue (the worker paused): its place shows; cancelled from its row
            live_service.workers[0].send_signal(signal.SIGSTOP)
            try:
                third = upload(page, uploads.checkpoint_zip, uploads.images_zip)
                row = page.locator(f'#jobs [data-job-id="{third}"]')
                expect(row.locator(".queue-position")).to_have_text("waiting for a worker: 1st in the queue")
                expect(page.locator("#message")).to_contain_text(f"Job {third} (chest-cnn.zip on xrays.zip) queued: "
                                                                 "1st in the queue.")
                row.locator(".cancel").click()
                expect(row.locator(".status")).to_have_text("cancelled", timeout=60_000)
                expect(page.locator("#message")).to_be_hidden()
            finally:
                live_service.workers[0].send_signal(signal.SIGCONT)

            # delete asks, then removes the row; the job is gone on the server too
            rows[second].locator(".delete").click()
            expect(rows[second]).to_have_count(0)
            page.click("#refresh")
            expect(page.locator("#jobs [data-job-id]")).to_have_count(2)
            expect(rows[second]).to_have_count(0)

            # a reload keeps the session (sessionStorage); sign out clears it. First wait for the
            # event streams to end (a queued job is cancelled at once, its stream ends within 0.5 s).
            expect(page.locator("#jobs")).to_have_attribute("data-streams", "0", timeout=30_000)
            reloading[0] = True
            page.reload()
            reloading[0] = False
            expect(page.locator("#jobs [data-job-id]")).to_have_count(2)
            page.click("#signout")
            expect(page.locator("#token")).to_be_visible()
            expect(page.locator("#jobs [data-job-id]")).to_have_count(0)
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            browser.close()

    # the deliberate 401 and 422, and the 409 of the guard of the job with nothing to guard (and
    # Chromium's console lines about them) are the only errors
    assert [r[:8] for r in bad_responses] == ["401 GET ", "422 POST", "409 GET "], bad_responses
    assert bad_responses[2].endswith(f"/api/v1/jobs/{second}/guard"), bad_responses
    assert [e for e in console_errors if not any(f"status of {s}" in e for s in (401, 409, 422))] == [], console_errors
    assert failed_requests == [], failed_requests
    assert all("/api/v1/" in line for line in aborted_by_reload), aborted_by_reload


def test_api_docs_render_offline(live_service):
    """/docs draws every route from local files (Swagger UI 5, which reads OpenAPI 3.1): no CDN."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            failed, remote = [], []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("request", lambda request: None if request.url.startswith(live_service.base_url)
                    else remote.append(request.url))
            page.goto(live_service.base_url + "/docs")
            expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
            assert page.locator(".opblock").count() >= 12
            expect(page.locator("body")).to_contain_text("/api/v1/jobs/{job_id}/events")
            assert not failed and not remote, (failed, remote)
        finally:
            browser.close()
