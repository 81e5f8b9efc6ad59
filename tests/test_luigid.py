"""The pipeline against a real central scheduler (luigid), two workers, the smoke ablation."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from danet.head import ATTENTIONS
from pipeline.artifacts import CODE_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_luigid(tmp_path, port, log):
    """luigid on 127.0.0.1:port; the process once it answers, or None if it exited (port taken meanwhile)."""
    luigid_bin = Path(sys.executable).with_name("luigid")
    cmd = [str(luigid_bin)] if luigid_bin.exists() else [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()"]
    proc = subprocess.Popen(cmd + ["--address", "127.0.0.1", "--port", str(port),
                                   "--state-path", str(tmp_path / "luigi-state.pickle"),
                                   "--logdir", str(tmp_path / "luigid-logs")],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        time.sleep(0.5)  # something answers: it is ours only if ours is still running (a bind failure ends it)
        if proc.poll() is None:
            return proc
    _stop(proc)
    return None


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def luigid(tmp_path):
    """A luigid on 127.0.0.1 with its own state file and log, stopped whatever happens.

    The free port is found by binding port 0 and closing it, so another process may take it before
    luigid binds it: then luigid exits, and the next free port is tried.
    """
    (tmp_path / "luigid-logs").mkdir()  # luigid logs to luigi-server.log there
    with open(tmp_path / "luigid.out", "w") as log:
        for _ in range(5):
            port = _free_port()
            proc = _start_luigid(tmp_path, port, log)
            if proc is not None:
                break
        else:
            raise RuntimeError("luigid did not start on any of 5 ports: "
                               + (tmp_path / "luigid.out").read_text()[-2000:])
        try:
            yield port
        finally:
            _stop(proc)


def _scheduler_tasks(port, status="DONE") -> dict:
    query = urllib.parse.urlencode({"data": json.dumps({"status": status})})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?{query}", timeout=10) as r:
        return json.load(r)["response"]


def _api(port, method, task_id) -> dict:
    query = urllib.parse.urlencode({"data": json.dumps({"task_id": task_id})})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?{query}", timeout=10) as r:
        return json.load(r)["response"]


def test_ablation_on_a_central_scheduler_with_two_workers(luigid, tmp_path):
    root = tmp_path / "artifacts"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "Ablation", "--preset", "smoke",
                          "--workers", "2", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid),
                          "--pipeline-root", str(root), "--pipeline-progress", "false"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ablation = json.loads((root / CODE_VERSION / "runs" / "synthetic" / "smoke" / "seed0" / "ablation.json").read_text())
    assert set(ablation["ablation"]) == set(ATTENTIONS)
    assert all(0.0 <= row["miou"] <= 1.0 for row in ablation["ablation"].values())

    # the central scheduler, not a local one, ran the graph -- and two trainings at once
    done = _scheduler_tasks(luigid)
    trainings = [t for t in done.values() if t["name"] == "TrainedModel"]
    assert len(trainings) == 4 and any(t["name"] == "Ablation" for t in done.values())
    spans = sorted((t["time_running"], t["last_updated"]) for t in trainings)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), f"no two trainings overlapped: {spans}"

    # the tasks reported their progress to the scheduler (what the visualiser shows)
    for task_id, t in done.items():
        if t["name"] in ("TrainedModel", "Evaluation"):
            message = _api(luigid, "get_task_status_message", task_id)["statusMessage"]
            percentage = _api(luigid, "get_task_progress_percentage", task_id)["progressPercentage"]
            unit = "iteration 6/6, loss " if t["name"] == "TrainedModel" else "image 4/4, ETA"
            assert unit in message and "ETA" in message and percentage == 100, (t["name"], message, percentage)
    # and training curves went to TensorBoard event files
    events = list(root.rglob("events.out.tfevents.*"))
    assert len(events) == 4, events
