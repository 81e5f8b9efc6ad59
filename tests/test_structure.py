"""The layers point one way (refimpl ← danet ← pipeline), no module imports itself round a cycle,
and the torchrun entry point never loads Luigi."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("refimpl", "danet", "pipeline")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, wherever in the file (functions included)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            targets |= {m for m in found if m in modules}
        graph[name] = targets - {name}
    return graph


def find_cycle(graph):
    """A list of modules forming an import cycle, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert "pipeline.tasks" in graph["pipeline"] or graph["pipeline"] == set()
    # a package's __init__ re-exporting its modules is not a cycle; module-to-module edges are
    edges = {m: {t for t in ts if not (m.count(".") == 0 and t.startswith(m + "."))} for m, ts in graph.items()}
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_point_one_way():
    graph = import_graph()
    for module, targets in graph.items():
        layer = module.split(".")[0]
        allowed = {"refimpl": {"refimpl"}, "danet": {"refimpl", "danet"}, "pipeline": set(PACKAGES)}[layer]
        wrong = {t for t in targets if t.split(".")[0] not in allowed}
        assert not wrong, f"{module} imports {sorted(wrong)}: {layer} may only import {sorted(allowed)}"


def test_only_the_task_graph_imports_luigi():
    for path in (ROOT / "pipeline").rglob("*.py"):                # the datasets package included
        tree = ast.parse(path.read_text())
        uses = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                and any(a.name.split(".")[0] == "luigi" for a in n.names) or isinstance(n, ast.ImportFrom)
                and (n.module or "").split(".")[0] == "luigi"]
        where = path.relative_to(ROOT / "pipeline").as_posix()
        assert not uses or where in ("tasks.py", "command_line.py"), f"pipeline/{where} imports luigi"


def test_distributed_entry_point_does_not_load_luigi():
    code = ("import sys\nimport pipeline.distributed, pipeline.build, pipeline.train, pipeline.report\n"
            "assert 'luigi' not in sys.modules, sorted(m for m in sys.modules if m.startswith('luigi'))\n"
            "import pipeline\nassert pipeline.FullReport.__name__ == 'FullReport'\nassert 'luigi' in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def _layout_modules() -> set[str]:
    """Module paths named in the first column of docs/layout.md's table; a bare file name in a cell
    lives in the folder of the cell's first path."""
    import re

    named = set()
    for line in (ROOT / "docs" / "layout.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        folder = ""
        for name in re.findall(r"`([^`]+\.py)`", cell):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
                named.add(name)
            else:
                named.add(f"{folder}/{name}")
    return named


def test_the_layout_page_names_every_module_and_only_real_ones():
    on_disk = {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if p.name != "__init__.py"}
    named = _layout_modules()
    assert not on_disk - named, f"modules missing from docs/layout.md: {sorted(on_disk - named)}"
    assert not named - on_disk, f"docs/layout.md names modules that do not exist: {sorted(named - on_disk)}"


def test_no_function_body_over_80_lines():
    """The project's readability rule: a function fits on a screen (its docstring aside)."""
    long = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = node.body
                    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                        and isinstance(body[0].value.value, str)
                    start = body[1].lineno if has_doc and len(body) > 1 else body[0].lineno
                    if node.end_lineno - start + 1 > 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, f"function bodies over 80 lines: {long}"
