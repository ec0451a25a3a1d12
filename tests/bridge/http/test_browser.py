"""The web UI in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Screenshots are kept under $VTLA_ARTIFACTS/http (default tests/artifacts/http, git-ignored).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.http.conftest import LiveHttp, image_bytes

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory(prefix="vtla-chromium-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def sse_final(body: str) -> dict[str, Any]:
    events = [json.loads(b[len("data: ") :]) for b in body.split("\n\n") if b.startswith("data: ")]
    assert events and events[-1]["completed"] is True
    return events[-1]


def test_upload_caption_detect_point_act(browser: Any, live_http: LiveHttp, artifacts_dir: Path,
                                         tmp_path: Path) -> None:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_http.url + "/")
    page.wait_for_selector("#status-server.ok")
    assert "random weights" in page.inner_text("#status-models")
    assert page.inner_text("#status-device") == "device: cpu/float32"

    page.click("details summary")  # settings: short generations keep the test fast
    page.fill("#set-max-tokens", "8")
    page.fill("#set-max-objects", "3")
    image_path = tmp_path / "scene.png"
    image_path.write_bytes(image_bytes(192, 128))
    page.set_input_files("#file", str(image_path))
    page.wait_for_function("document.getElementById('preview').naturalWidth === 192")
    assert "192×128" in page.inner_text("#image-info")
    page.screenshot(path=str(artifacts_dir / "ui-1-loaded.png"))

    # caption, streamed: what is rendered is what the server sent
    with page.expect_response("**/v1/caption") as caption_info:
        page.click("#caption-short")
    page.wait_for_selector("#caption-text[data-state=done]")
    final = sse_final(caption_info.value.text())
    assert page.inner_text("#caption-text") == final["caption"].strip() or \
        page.eval_on_selector("#caption-text", "e => e.textContent") == final["caption"]
    assert page.get_attribute("#caption-text", "data-length") == "short"
    assert json.loads(caption_info.value.request.post_data)["settings"] == {"max_tokens": 8, "max_objects": 3}

    # detect: one list item and one drawn box per object
    page.fill("#detect-object", "red square")
    with page.expect_response("**/v1/detect") as detect_info:
        page.click("#detect-form button")
    page.wait_for_selector("#detect-list[data-state=done]")
    objects = detect_info.value.json()["objects"]
    assert len(objects) <= 3
    assert page.get_attribute("#detect-list", "data-count") == str(len(objects))
    assert page.get_attribute("#overlay", "data-boxes") == str(len(objects))
    if objects:
        assert page.locator("#detect-list li").count() == len(objects)
        assert f"{objects[0]['x_min']:.3f}" in page.inner_text("#detect-list li >> nth=0")
        # the box really is drawn: the overlay canvas has painted pixels
        painted = page.evaluate("""() => { const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert painted > 0
    page.screenshot(path=str(artifacts_dir / "ui-2-caption-detect.png"))

    page.fill("#point-object", "red square")
    with page.expect_response("**/v1/point") as point_info:
        page.click("#point-form button")
    page.wait_for_selector("#point-list[data-state=done]")
    assert page.get_attribute("#overlay", "data-points") == str(len(point_info.value.json()["points"]))

    page.fill("#instruction", "pick up the red square")
    with page.expect_response("**/v1/act") as act_info:
        page.click("#act-form button")
    page.wait_for_selector("#action-view[data-state=done]")
    result = act_info.value.json()
    assert page.get_attribute("#action-view", "data-steps") == str(len(result["actions"]))
    assert page.inner_text("#gripper-text") == f"{result['action'][6]:.3f}"
    width = page.evaluate("document.getElementById('gripper-bar').style.width")
    assert width == f"{max(0.0, min(1.0, result['action'][6])) * 100}%" or width.endswith("%")
    page.wait_for_function("document.getElementById('status-latency').textContent.includes('act')")
    page.screenshot(path=str(artifacts_dir / "ui-3-act.png"), full_page=True)
    assert not errors, errors
    assert page.inner_text("#message") == ""
    page.close()


def test_phone_layout_and_error_message(browser: Any, live_http: LiveHttp, artifacts_dir: Path) -> None:
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_http.url + "/")
    page.wait_for_selector("#status-server.ok")
    # nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # acting without an image explains itself instead of failing silently
    page.click("#act-form button")
    page.wait_for_function("document.getElementById('message').textContent.length > 0")
    assert "load an image first" in page.inner_text("#message")
    page.screenshot(path=str(artifacts_dir / "ui-4-phone.png"), full_page=True)
    page.goto(live_http.url + "/docs")
    page.wait_for_selector("#post_predict")
    assert "/v1/caption" in page.inner_text("#ops")
    page.close()
