"""Set-up invariants: refimpl needs no torch; environment.yml and pyproject.toml agree."""

import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_refimpl_imports_and_runs_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, refimpl\n"
        "x = np.ones((1, 8, 2, 2))\n"
        "print(refimpl.channel_attention(x, {'gamma': np.array([0.5])}).shape)\n"
        "assert 'torch' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(1, 8, 2, 2)"


def _names(reqs):
    return {re.split(r"[<>=!~\[ ]", r.strip(), maxsplit=1)[0].lower(): r.replace(" ", "") for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pip_block = (ROOT / "environment.yml").read_text().split("- pip:", 1)[1]
    pip_reqs = [r for r in re.findall(r"^\s+- (.+)$", pip_block, flags=re.M) if not r.startswith("--")]
    assert _names(pip_reqs) == _names(wanted)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def _minimum(spec: str) -> tuple:
    return tuple(int(n) for n in re.search(r">=\s*(\d+)\.(\d+)", spec).groups())


def test_requires_python_is_true():
    """pyproject's requires-python and the Makefile's check are the same version, and no older than
    what the code imports needs (tomllib is 3.11+)."""
    claimed = _minimum(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    checked = re.search(r"sys\.version_info >= \((\d+), (\d+)\)", (ROOT / "Makefile").read_text())
    assert checked and tuple(map(int, checked.groups())) == claimed, "the Makefile checks another version"
    sources = [p for d in ("refimpl", "danet", "pipeline", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    uses = [p.name for p in sources if re.search(r"^\s*(import tomllib|from tomllib)", p.read_text(), re.M)]
    if uses:
        assert claimed >= (3, 11), f"{uses} import tomllib (Python 3.11+) but requires-python says {claimed}"
