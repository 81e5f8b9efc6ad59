"""The attention explorer in a real browser: headless Chromium driven by Playwright.

The page of a tiny DANet on a photo-like image with a 2-pixel-wide pole is opened from
``file://``; query pixels are chosen with real mouse moves, a click (pin) and an arrow key; the row
each panel shows is read back through the page's ``danetExplorer`` accessor and compared with
``refimpl``'s row of S for that feature cell within half a quantisation step. Any console error,
page error or request for something other than the file itself fails the test. The same page
inside an ``<iframe srcdoc>`` (how a notebook or a report embeds it) must load as well.

Needs a Chromium on PATH (``chromium``, ``chromium-browser``, ``google-chrome``) and the
``playwright`` package (which is told to use that browser; it downloads none). Without them the
test is skipped with how to install one -- or fails, when ``DANET_REQUIRE_BROWSER=1`` (as in
``.ci/run``).
"""

import os
import shutil
import tempfile

import numpy as np
import pytest

from danet.explore import iframe, write_explorer
from danet.attention_maps import feature_cell
from tests.test_explore import pole_scene, reference_attention, tiny_model

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW = ("no headless Chromium for the explorer's browser test: install one (`apt-get install chromium` on "
       "Debian/Ubuntu, `dnf install chromium` on Fedora) and `pip install playwright`; no browser is downloaded")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser():
    """(sync_playwright, path of a Chromium) or a skip -- a failure under DANET_REQUIRE_BROWSER=1."""
    path = next((p for p in map(shutil.which, BROWSERS) if p), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("DANET_REQUIRE_BROWSER") == "1":
            pytest.fail("DANET_REQUIRE_BROWSER=1 but " + HOW)
        pytest.skip(HOW)
    return sync_playwright, path


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    model, image = tiny_model(), pole_scene()
    path = write_explorer(str(tmp_path_factory.mktemp("browser") / "pole_explorer.html"), model, image,
                          title="pole.png", source="tiny.pt")
    S, cam, (h, w) = reference_attention(model, image)
    return {"path": path, "S": S, "cam": cam, "h": h, "w": w, "H": image.shape[0], "W": image.shape[1],
            "align_corners": model.align_corners}


def _row_matches(shown: dict, S: np.ndarray, w: int, cell) -> None:
    i, j = cell
    assert tuple(shown["cell"]) == (i, j)
    ref = S[i * w + j]                                                  # (N,) refimpl's row of S
    step = ref.max() / 255
    err = np.abs(np.asarray(shown["values"]) - ref)
    assert err.max() <= step * (0.5 + 1e-3), f"cell {cell}: error {err.max() / step:.3f} steps"
    assert shown["step"] == pytest.approx(step, rel=1e-5)


def test_rows_shown_in_chromium_are_refimpls(page_file):
    sync_playwright, chromium = _browser()
    f = page_file
    errors, requests = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True, args=FLAGS,
                                                   viewport={"width": 1600, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + f["path"])
            page.wait_for_selector("body[data-ready]", timeout=15000)
            assert page.evaluate("document.body.dataset.ready") == "1", errors
            scale = page.evaluate("danetExplorer.layout.scale")
            box = page.locator("#seg").bounding_box()

            def point(y, x):                                            # the centre of image pixel (y, x)
                return box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale

            def cell(y, x):
                return feature_cell(y, x, f["H"], f["W"], f["h"], f["w"], f["align_corners"])

            for y, x in ((20, 20), (80, 110)):                          # hover: the current query
                page.mouse.move(*point(y, x))
                _row_matches(page.evaluate("danetExplorer.current()"), f["S"], f["w"], cell(y, x))
            pole = (50, 61)                                             # on the 2-pixel pole: click pins it
            page.mouse.click(*point(*pole))
            pinned = page.evaluate("danetExplorer.pinned()")
            _row_matches(pinned, f["S"], f["w"], cell(*pole))
            assert page.locator("#pinned").get_attribute("data-cell") == "%d,%d" % cell(*pole)
            page.keyboard.press("ArrowRight")                           # moves the current query, not the pin
            i, j = cell(*pole)
            _row_matches(page.evaluate("danetExplorer.current()"), f["S"], f["w"], (i, j + 1))
            page.keyboard.press("ArrowUp")
            _row_matches(page.evaluate("danetExplorer.current()"), f["S"], f["w"], (i - 1, j + 1))
            assert page.evaluate("danetExplorer.pinned()")["cell"] == list(cell(*pole))

            cam_box = page.locator("#cam").bounding_box()               # CAM: hover row 7
            C = f["cam"].shape[0]
            page.mouse.move(cam_box["x"] + cam_box["width"] / 2, cam_box["y"] + (7.5 / C) * cam_box["height"])
            cam = page.evaluate("danetExplorer.cam()")
            ref = f["cam"][7]
            assert cam["row"] == 7 and cam["beta"] == pytest.approx(0.3)
            top = [k for k, _ in cam["partners"]]
            assert set(top) <= set(np.argsort(-ref)[:7].tolist())      # ties within a step may reorder
            assert np.allclose([v for _, v in cam["partners"]], ref[top], atol=ref.max() / 510 * 1.001)

            page.locator("input[value=pam]").check()                    # the branch switch redraws the legend
            legend = page.locator("#legend").inner_text()
            assert legend.split("\n")[0] == "{} ({:.1f}%)".format(*page.evaluate(
                "JSON.parse(document.getElementById('danet-data').textContent).branches.pam.legend[0]")[::2])

            outer = ctx.new_page()                                      # as a notebook shows it: <iframe srcdoc>
            outer.on("console", lambda m: m.type == "error" and errors.append(m.text))
            outer.on("pageerror", lambda e: errors.append(str(e)))
            outer.set_content(iframe(open(f["path"], encoding="utf-8").read()))
            inner = outer.frame_locator("iframe")
            inner.locator("body[data-ready]").wait_for(timeout=15000)
            assert inner.locator("body").get_attribute("data-ready") == "1", errors
        finally:
            ctx.close()
    assert errors == [], f"JavaScript errors: {errors}"
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
