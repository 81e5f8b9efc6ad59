"""The README's Quick start, run as typed on a fresh clone, with the time of each command.

The commands are the first ```bash block under "## Quick start" within the README's first 60 lines
(a line ending in a backslash continues on the next; comments are dropped). The script clones this
repository's committed HEAD into a temporary folder and runs them there, one after the other, in
one bash shell (so ``. .venv/bin/activate`` holds for the rest), from a clean environment (no
PYTHONPATH, no active virtualenv). Two kinds of command cannot run unattended and are checked
instead: opening a file (``xdg-open``/``open`` PATH: the file must exist and not be empty) and
``make lab`` (JupyterLab must install and report its server running; it is then stopped).

``--preset smoke`` runs ``make report`` as ``make report ARGS="--preset smoke"`` and rewrites the
paths the later commands use (``synthetic-cpu`` -> ``synthetic-smoke``, ``synthetic/cpu/`` ->
``synthetic/smoke/``): the whole sequence in minutes instead of the default preset's training.

``--only COMMAND`` (repeatable) runs only the Quick start commands typed so, and ``--venv DIR`` lends
the clone an installed virtualenv instead of the one ``make venv`` builds (:func:`borrow_venv`; nothing
is installed or written into it): ``--only "make lab" --venv .venv`` times ``make lab`` alone.

Usage: ``python benchmarks/quickstart.py [--preset smoke] [--only COMMAND] [--venv DIR] [--keep DIR]
[--json FILE]``. Exit status 0 when every command succeeded; the table of seconds per command is
printed either way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_SECONDS = 600


def quick_start(readme: str, first_lines: int = 60) -> list[str]:
    """The Quick start's commands: the first ```bash block after "## Quick start" in the first lines."""
    head = "\n".join(readme.splitlines()[:first_lines])
    m = re.search(r"^## Quick start\n.*?^```bash\n(.*?)^```", head, flags=re.S | re.M)
    if m is None:
        raise ValueError(f"no ```bash block under '## Quick start' in the README's first {first_lines} lines")
    joined = re.sub(r"\\\n\s*", " ", m.group(1))
    commands = [strip_comment(line).strip() for line in joined.splitlines()]
    return [c for c in commands if c]


def strip_comment(line: str) -> str:
    """The line without a trailing comment (`` # ...``; the Quick start has no ``#`` inside quotes)."""
    return re.sub(r"(^|\s+)#(\s.*)?$", "", line)


def adapt(command: str, preset: str | None) -> str:
    """The command as this script runs it (module docstring)."""
    if preset:
        command = command.replace("synthetic-cpu", f"synthetic-{preset}").replace("synthetic/cpu/", f"synthetic/{preset}/")
        if command == "make report":
            command = f'make report ARGS="--preset {preset}"'
    opener = re.fullmatch(r"(xdg-open|open)\s+(\S+)", command)
    if opener:
        return f"test -s {opener.group(2)} && echo 'would open {opener.group(2)}'"
    if command == "make lab":                               # start it, wait for the server, stop its process group
        return (f"setsid make lab > lab.log 2>&1 & lab=$!; for i in $(seq {LAB_SECONDS * 10}); do "
                "grep -q 'is running at' lab.log && break; sleep 0.1; done; "
                "grep -m1 'is running at' lab.log; ok=$?; kill -- -$lab; exit_ok() { return $ok; }; exit_ok")
    return command


def borrow_venv(venv: Path, clone: Path) -> None:
    """Make ``clone/.venv`` the installed virtualenv ``venv``: a folder whose ``bin`` links to ``venv``'s,
    with an ``.installed`` stamp newer than the clone's Makefile and pyproject.toml, so that ``make``
    sees the virtualenv built and installs nothing (``venv`` itself is only read)."""
    shim = clone / ".venv"
    shim.mkdir()
    (shim / "bin").symlink_to(venv.resolve() / "bin")
    stamp = shim / ".installed"
    stamp.touch()
    newest = max((clone / name).stat().st_mtime for name in ("Makefile", "pyproject.toml"))
    os.utime(stamp, (newest + 1, newest + 1))


def shell_script(commands: list[str]) -> str:
    """One bash script that runs the commands in turn, marking each one's start and end (status, clock)."""
    lines = ["cd \"$(dirname \"$0\")\""]
    for i, c in enumerate(commands):
        lines += [f"echo \"::start {i} $EPOCHREALTIME\"", c, "rc=$?", f"echo \"::end {i} $rc $EPOCHREALTIME\"",
                  "[ $rc = 0 ] || exit $rc"]
    return "\n".join(lines) + "\n"


def run(commands: list[str], clone: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "/.venv/" not in p)
    script = clone / ".quickstart.sh"
    script.write_text(shell_script(commands))
    proc = subprocess.Popen(["bash", str(script)], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    results, tail = [], []
    started = 0.0
    for line in proc.stdout:
        m = re.match(r"::end (\d+) (\d+) ([\d.]+)", line)
        if line.startswith("::start"):
            started = float(line.split()[2])
        elif m:
            i, rc, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3)) - started
            results.append({"command": commands[i], "rc": rc, "seconds": round(seconds, 1), "last_line": tail[-1:]})
            print(f"[{seconds:7.1f} s] rc {rc}  {commands[i]}", flush=True)
            tail = []
        else:
            tail.append(line.rstrip("\n"))
    proc.wait()
    if proc.returncode and (not results or results[-1]["rc"] == 0):
        print("\n".join(tail[-20:]))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="run make report with this preset (e.g. smoke) and adapt the paths")
    ap.add_argument("--only", action="append", default=None, metavar="COMMAND",
                    help="run only this Quick start command, as typed (repeatable), e.g. --only 'make lab'")
    ap.add_argument("--venv", default=None, help="an installed virtualenv the clone uses as its .venv (make installs nothing)")
    ap.add_argument("--keep", default=None, help="clone into this (new) folder and keep it")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    typed = quick_start((ROOT / "README.md").read_text())
    if args.only:
        unknown = [c for c in args.only if c not in typed]
        if unknown:
            ap.error(f"--only {unknown[0]!r} is not a Quick start command; expected one of {typed}")
        typed = [c for c in typed if c in args.only]
    if args.venv and not os.access(Path(args.venv) / "bin" / "python", os.X_OK):
        ap.error(f"--venv {args.venv!r} holds no virtualenv: expected {Path(args.venv) / 'bin' / 'python'}")
    commands = [adapt(c, args.preset) for c in typed]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="quickstart-"))
    clone = work / "danet"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    if args.venv:
        borrow_venv(Path(args.venv), clone)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"fresh clone of {head} in {clone}; {len(commands)} commands from the README's Quick start")
    results = run(commands, clone)
    ok = len(results) == len(commands) and all(r["rc"] == 0 for r in results)
    print(("every command succeeded" if ok else "FAILED") + f"; {sum(r['seconds'] for r in results):.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": head, "preset": args.preset, "typed": typed,
                                               "results": results, "ok": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
