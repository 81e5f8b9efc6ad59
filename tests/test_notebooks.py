"""Every committed notebook is a clean top-to-bottom run that ends with a summary and exercises.

``pytest --nbval`` only compares cells that carry stored outputs from an execution; a cell saved
unexecuted, or a notebook saved after running cells out of order, would slip past it. This test
catches both, and checks what the notebooks promise a reader: one reading order, stated and linked
in each; pictures with a sentence under each; derivations that use the notebook's own softmax (so a
comparison with ``refimpl`` is never ``refimpl.softmax`` against a ``refimpl`` function built on
it); hidden "check your answer" cells after the exercises; timings only in cells nbval ignores; one
set-up, ``setup_notebook.py``, that every notebook runs first (warnings silenced, the project's rel_err).
(The outputs themselves are checked by ``pytest --nbval notebooks``.)

The reading order is 01 … 09 below; 08 and 09 are checked for a clean run, the order and the
pictures, while the rules for derivations (own softmax, hidden checks) apply to 01 … 07.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

READING_ORDER = [
    "01_softmax_and_attention", "02_position_attention", "03_channel_attention", "04_danet_head",
    "05_gradients", "06_blocked_attention", "07_relatives_and_history",
    "08_whole_network_in_numpy", "09_trained_danet",
]
DERIVATIONS = READING_ORDER[:7]          # the notebooks held to every rule below
MIN_IMAGES_DERIVATIONS = 11
MIN_IMAGES_ALL = 14
MAX_BYTES = 300_000
SETUP = NOTEBOOK_DIR / "setup_notebook.py"              # the set-up every notebook's first cell runs
SETUP_RUN = re.compile(r"^%run setup_notebook\.py$", flags=re.M)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _cells(stem):
    return json.loads((NOTEBOOK_DIR / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]


def _images(cells) -> int:
    return sum("image/png" in o.get("data", {}) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_the_notebooks_are_there():
    names = {p.stem for p in NOTEBOOKS}
    missing = [stem for stem in READING_ORDER if stem not in names]
    assert not missing, f"notebooks missing from notebooks/: {missing} (found {sorted(names)})"
    unexpected = names - set(READING_ORDER)
    assert not unexpected, f"notebooks outside the reading order {READING_ORDER}: {sorted(unexpected)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_clean_run_with_summary_and_exercises(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert code, f"{path.name} has no code cells"
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1, 2, 3, ...; "
        "re-run it top to bottom in a fresh kernel before committing")
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was saved with an error output: {errors[0].get('ename')}"
    markdown = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    assert any("Summary" in m for m in markdown), f"{path.name} has no markdown 'Summary'"
    assert any("Exercise" in m for m in markdown), f"{path.name} has no markdown 'Exercises'"


def test_the_setup_silences_warnings_before_matplotlib_and_reuses_rel_err():
    src = SETUP.read_text(encoding="utf-8")
    silence, pyplot = src.find('warnings.simplefilter("ignore")'), src.find("import matplotlib.pyplot")
    assert 0 <= silence < pyplot, "setup_notebook.py must silence warnings before it imports matplotlib.pyplot"
    assert re.search(r"^from danet\.numerics import rel_err$", src, flags=re.M), \
        "setup_notebook.py must give the notebooks danet.numerics.rel_err, the project's one rel_err"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_shared_setup_first_and_no_own_rel_err(path):
    """The set-up is written once (setup_notebook.py); a notebook runs it first and adds only its own names."""
    code = [_source(c) for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    assert SETUP_RUN.search(code[0]), f"{path.name}: the first code cell does not `%run setup_notebook.py`"
    assert not any(SETUP_RUN.search(s) for s in code[1:]), f"{path.name} runs setup_notebook.py again after its first cell"
    own = [k for k, s in enumerate(code) if re.search(r"^def rel_err\(", s, flags=re.M)]
    assert not own, f"{path.name}: code cell {own[0]} defines its own rel_err; use the one setup_notebook.py gives"


@pytest.mark.parametrize("stem", DERIVATIONS)
def test_reading_order_stated_and_linked(stem):
    cells = _cells(stem)
    intro = _source(cells[0])
    order = r"\s*→\s*".join(rf"\**{name[:2]}\b[^→]*" for name in READING_ORDER)
    assert re.search(order, intro), f"{stem}: the first cell does not state the reading order 01 → … → 09"
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    k = READING_ORDER.index(stem)
    neighbours = READING_ORDER[max(k - 1, 0):k] + READING_ORDER[k + 1:k + 2]
    for other in neighbours:
        assert f"({other}.ipynb)" in markdown, f"{stem}: no link to its neighbour {other}.ipynb"


@pytest.mark.parametrize("stem", DERIVATIONS)
def test_pictures_with_a_sentence_and_a_small_file(stem):
    cells = _cells(stem)
    assert _images(cells) >= 1, f"{stem} has no picture"
    for k, cell in enumerate(cells):
        if cell["cell_type"] == "code" and _images([cell]):
            after = next((c for c in cells[k + 1:] if c["cell_type"] == "markdown"), None)
            assert after is not None and _source(after).lstrip().startswith("*What to see"), \
                f"{stem}: the picture of code cell {k} is not followed by a '*What to see*' sentence"
    size = (NOTEBOOK_DIR / f"{stem}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{stem}.ipynb is {size:,} bytes; keep it under {MAX_BYTES:,} (smaller dpi)"


def test_enough_pictures():
    own = {stem: _images(_cells(stem)) for stem in DERIVATIONS}
    assert sum(own.values()) >= MIN_IMAGES_DERIVATIONS, f"image outputs per notebook: {own}"
    total = sum(_images(json.loads(p.read_text(encoding="utf-8"))["cells"]) for p in NOTEBOOKS)
    assert total >= MIN_IMAGES_ALL, f"{total} image outputs in notebooks/, expected at least {MIN_IMAGES_ALL}"
    for stem in ("08_whole_network_in_numpy", "09_trained_danet"):
        assert _images(_cells(stem)) >= 3, f"{stem} has fewer than 3 pictures"


def test_the_trained_notebook_asserts_what_it_claims():
    code = "\n".join(_source(c) for c in _cells("09_trained_danet") if c["cell_type"] == "code")
    assert re.search(r"assert .*iou.*> *0\.5", code, re.I), "09 must assert both keyed-class IoUs > 0.5"
    assert re.search(r"assert .*share", code, re.I), "09 must assert the attention share on the key"


@pytest.mark.parametrize("stem", DERIVATIONS)
def test_derivations_use_their_own_softmax(stem):
    """refimpl.softmax is only ever checked (in 01), never used to derive what refimpl is compared with."""
    cells = [c for c in _cells(stem) if c["cell_type"] == "code"]
    sources = [_source(c) for c in cells]
    assert any(re.search(r"^def softmax\(", s, flags=re.M) for s in sources), f"{stem} defines no softmax of its own"
    for k, src in enumerate(sources):
        if "refimpl.softmax" not in src:
            continue
        assert stem == DERIVATIONS[0], f"{stem}: code cell {k} calls refimpl.softmax; use the notebook's own softmax"
        others = re.findall(r"refimpl\.(?!softmax\b)\w+", src)
        assert not others, f"{stem}: code cell {k} mixes refimpl.softmax with {others}"


@pytest.mark.parametrize("stem", DERIVATIONS)
def test_hidden_checks_after_the_exercises(stem):
    cells = _cells(stem)
    exercises = next(k for k, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in _source(c))
    checks = [k for k, c in enumerate(cells) if c["cell_type"] == "code" and _source(c).startswith("# check your answer")]
    assert checks, f"{stem} has no '# check your answer' cell"
    for k in checks:
        assert k > exercises, f"{stem}: check cell {k} comes before the exercises"
        assert cells[k].get("metadata", {}).get("jupyter", {}).get("source_hidden") is True, \
            f"{stem}: check cell {k} is not hidden (metadata jupyter.source_hidden)"
    assert all(c["cell_type"] == "code" for c in cells[exercises + 1:]), f"{stem}: the exercise cells must end the notebook"


@pytest.mark.parametrize("stem", DERIVATIONS)
def test_stable_outputs(stem):
    """Timings only where nbval ignores them; Python floats, not NumPy reprs (warnings: the set-up tests above)."""
    code = [c for c in _cells(stem) if c["cell_type"] == "code"]
    for k, cell in enumerate(code):
        src = _source(cell)
        printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                          for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        assert "np.float" not in printed, f"{stem}: code cell {k} prints a NumPy scalar repr"
        if re.search(r"perf_counter|time\.time\(", src) and printed:
            assert src.startswith("# NBVAL_IGNORE_OUTPUT"), f"{stem}: code cell {k} prints timings nbval would compare"
