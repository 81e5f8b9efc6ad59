"""Every committed notebook is a clean top-to-bottom run that ends with a summary and exercises.

``pytest --nbval`` only compares cells that carry stored outputs from an execution; a cell saved
unexecuted, or a notebook saved after running cells out of order, would slip past it. This test
catches both. (The outputs themselves are checked by ``pytest --nbval notebooks``.)
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_the_notebooks_are_there():
    names = [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 6, f"expected at least 6 notebooks in notebooks/, found {names}"
    for number in ("01", "02", "03", "04", "05", "06"):
        assert any(name.startswith(number + "_") for name in names), f"notebook {number} is missing: {names}"


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
