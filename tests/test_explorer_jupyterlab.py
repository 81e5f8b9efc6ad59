"""The attention explorer inside a real JupyterLab, where notebook 09 shows it to students.

A JupyterLab server is started on a free loopback port with a token, in a temporary directory with
its own configuration, data (notebook signatures), runtime and settings folders; headless Chromium
(driven by Playwright, as in ``tests/test_explorer_browser.py``) opens a one-cell notebook whose
cell displays ``danet.explore.iframe`` of the tiny model's page on the pole scene:

1. As stored and untrusted (as a notebook from a clone or a download opens), JupyterLab sanitises
   the output: no frame, no script. The output must then say so and what to do, not be blank.
2. Run (Shift+Enter in the cell): the output is trusted, the explorer loads in its frame, real mouse
   moves over the photo choose queries, and the row the page shows -- and the pixel and feature
   cell its text names -- are refimpl's row of S for that cell within half a quantisation step.
   Hovering the CAM matrix shows a row's partners. The frame is fitted to the page's height.
3. Saved and reopened: JupyterLab signs a notebook whose outputs are all trusted, so the stored
   explorer runs on opening, without the kernel.

Any console or page error, and any request that leaves the server, fails the test (with a
screenshot of JupyterLab in the test's tmp_path). The server and its kernel are stopped whatever
happens. Needs Chromium, ``playwright`` and ``jupyterlab`` (the
``[test]`` extras); without them it is skipped with how to get them -- or fails, when
``DANET_REQUIRE_BROWSER=1`` (as in ``.ci/run``).
"""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from danet.attention_maps import feature_cell
from danet.explore import explorer_html, iframe
from tests.test_explore import pole_scene, reference_attention, tiny_model
from tests.test_explorer_browser import FLAGS, _browser, _row_matches

ROOT = Path(__file__).resolve().parents[1]
CELL = ("from IPython.display import HTML, display\n"
        "from danet.explore import explorer_html, iframe\n"
        "from tests.test_explore import pole_scene, tiny_model\n"
        "display(HTML(iframe(explorer_html(tiny_model(), pole_scene(), title='pole.png', source='tiny.pt'))))")
SETTINGS = {  # JupyterLab's defaults, but no news or update checks (no network)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
START_S, RUN_S = 30, 60  # the server's start; the cell's run (a kernel importing torch on a busy machine)


def _jupyterlab_or_skip():
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        how = "no JupyterLab for the explorer's JupyterLab test: `pip install -e .[test]` installs it"
        if os.environ.get("DANET_REQUIRE_BROWSER") == "1":
            pytest.fail("DANET_REQUIRE_BROWSER=1 but " + how)
        pytest.skip(how)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(stored_html: str) -> dict:
    """A one-cell notebook whose cell shows the explorer; its stored output as a run would leave it."""
    output = {"output_type": "display_data", "metadata": {},
              "data": {"text/html": stored_html, "text/plain": "<IPython.core.display.HTML object>"}}
    cell = {"cell_type": "code", "execution_count": 1, "id": "explorer", "metadata": {}, "outputs": [output],
            "source": CELL}
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    return {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}


@contextmanager
def jupyterlab(root: Path):
    """A JupyterLab server serving ``root / "nb"``: yields (base URL, token); stopped on exit, always."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "run"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                     ("IPYTHONDIR", "ipython")):
        env[var] = str(root / sub)
    for name, value in SETTINGS.items():
        (root / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "settings" / name).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'nb'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_tail = (root / "server.log").read_text()[-2000:]
                    pytest.fail(f"JupyterLab did not start in {START_S} s:\n{log_tail}")
                time.sleep(0.2)
        yield base, token
    finally:
        server.terminate()                                  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def pole():
    model, image = tiny_model(), pole_scene()
    S, cam, (h, w) = reference_attention(model, image)
    return {"page": explorer_html(model, image, title="pole.png", source="tiny.pt"), "S": S, "cam": cam,
            "h": h, "w": w, "H": image.shape[0], "W": image.shape[1], "align_corners": model.align_corners}


def _explorer_frame(page, timeout_ms: int):
    """The explorer's frame in the notebook's output, once its page is ready and the frame fitted to it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    handle = page.wait_for_selector(".jp-OutputArea-output iframe", timeout=timeout_ms)
    frame = handle.content_frame()
    frame.wait_for_selector("body[data-ready]", timeout=15000)
    assert frame.evaluate("document.body.dataset.ready") == "1"
    tall = frame.evaluate("Math.ceil(document.documentElement.getBoundingClientRect().height)")
    try:
        page.wait_for_function("([el, h]) => el.clientHeight === h", arg=[handle, tall], timeout=5000)
    except PlaywrightTimeout:
        pytest.fail(f"the frame is {handle.evaluate('el => el.clientHeight')} px high, the page {tall} px: not fitted")
    handle.scroll_into_view_if_needed()
    return frame


def _check_hover(frame, f) -> None:
    """Mouse moves over the photo: the shown row, pixel and cell are refimpl's; the CAM shows a row.

    ``hover`` scrolls JupyterLab's notebook until the point is on screen, then moves the real mouse there.
    """
    scale = frame.evaluate("danetExplorer.layout.scale")
    for y, x in ((20, 20), (50, 61), (80, 110)):                    # (50, 61): on the 2-pixel pole
        frame.locator("#seg").hover(position={"x": (x + 0.5) * scale, "y": (y + 0.5) * scale})
        cell = feature_cell(y, x, f["H"], f["W"], f["h"], f["w"], f["align_corners"])
        _row_matches(frame.evaluate("danetExplorer.current()"), f["S"], f["w"], cell)
        text = frame.locator("#current .info").inner_text()
        assert re.search(rf"pixel \(y={y}, x={x}\) → query cell \({cell[0]}, {cell[1]}\)", text), text
    cam_box, C = frame.locator("#cam").bounding_box(), f["cam"].shape[0]
    frame.locator("#cam").hover(position={"x": cam_box["width"] / 2, "y": (7.5 / C) * cam_box["height"]})
    cam = frame.evaluate("danetExplorer.cam()")
    assert cam is not None and cam["row"] == 7 and cam["beta"] == pytest.approx(0.3), cam
    assert abs(cam["partners"][0][1] - f["cam"][7].max()) <= f["cam"][7].max() / 510 * 1.001


def _drive(page, base: str, token: str, f) -> None:
    """Steps 1-3 of the module's docstring, in the JupyterLab page."""
    page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")

    # 1. untrusted, as stored: sanitised, and saying what to do
    output = page.wait_for_selector(".jp-OutputArea-output", state="attached", timeout=30000)
    assert page.locator(".jp-OutputArea-output iframe").count() == 0
    note = output.inner_text()
    assert "untrusted" in note and "Run the cell" in note and "jupyter trust" in note, \
        f"the stored, untrusted explorer output does not say what to do: {note!r}"

    # 2. run the cell: a trusted output, and the explorer answers the mouse
    page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=RUN_S * 1000)   # the kernel is up
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    frame = _explorer_frame(page, RUN_S * 1000)
    assert "untrusted" not in page.locator(".jp-OutputArea-output").first.inner_text()
    _check_hover(frame, f)

    # 3. saved (JupyterLab signs it) and reopened: the stored explorer runs without the kernel
    page.keyboard.press("Control+s")
    page.wait_for_function("!document.querySelector('.jp-mod-dirty')", timeout=15000)
    page.reload()
    _check_hover(_explorer_frame(page, 30000), f)


def test_the_explorer_works_in_jupyterlab(pole, tmp_path):
    sync_playwright, chromium = _browser()
    _jupyterlab_or_skip()
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "explorer.ipynb").write_text(json.dumps(_notebook(iframe(pole["page"]))))
    errors, requests = [], []
    with jupyterlab(tmp_path) as (base, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            try:
                _drive(page, base, token, pole)
            except Exception:                                       # what JupyterLab showed, for the report
                page.screenshot(path=str(tmp_path / "jupyterlab.png"))
                print(f"screenshot of the failure: {tmp_path / 'jupyterlab.png'}")
                raise
        finally:
            browser.close()
    assert errors == [], f"JavaScript errors: {errors}"
    outside = [u for u in requests if not u.startswith((base, "data:", "blob:", "about:"))]
    assert outside == [], f"requests leaving the server: {outside}"
