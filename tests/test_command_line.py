"""`luigi --module pipeline ...` as a user types it: a bad parameter is one line and a non-zero exit,
and a finished run names where its result is on the last line (pipeline.command_line)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def luigi(*args, tmp_path, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", *map(str, args), "--pipeline-root",
                           str(tmp_path), "--pipeline-progress", "false"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("args, says", [
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--overrides", "notjson"], "--overrides: expected a JSON object"),
    (["--overrides", '{"iterations": -3}'], "iterations must be >= 1, got -3"),
    (["--dataset", "ade20k"], "dataset 'ade20k' has no preset of its own; name one with --preset"),
    (["--dataset", "camvd"], "camvd"),
])
def test_a_bad_parameter_is_one_line_and_a_failure(tmp_path, args, says):
    res = luigi("FullReport", *args, tmp_path=tmp_path)
    assert res.returncode == 40, res.stderr[-2000:]         # luigi.cfg [retcode] unhandled_exception
    lines = res.stderr.strip().splitlines()
    assert len(lines) <= 3, res.stderr
    assert says in lines[-1] and "Traceback" not in res.stderr and "Uncaught exception" not in res.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_the_traceback_is_kept_under_log_level_debug(tmp_path):
    res = luigi("FullReport", "--seed", "-1", "--log-level", "DEBUG", tmp_path=tmp_path)
    assert res.returncode == 40
    assert "Traceback" in res.stderr and "seed must be >= 0, got -1" in res.stderr


def test_a_finished_run_prints_where_its_result_is_last(tmp_path):
    res = luigi("PreparedDataset", "--preset", "smoke", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    written = list(tmp_path.rglob("dataset.json"))
    assert last == f"PreparedDataset: {written[0]}"
    again = luigi("PreparedDataset", "--preset", "smoke", tmp_path=tmp_path)   # nothing to do: still named
    assert again.stdout.strip().splitlines()[-1] == last


def test_log_level_debug_is_read_from_the_command_line():
    from pipeline import command_line

    assert command_line.traceback_wanted(["FullReport", "--log-level", "DEBUG"])
    assert command_line.traceback_wanted(["--log-level=DEBUG"])
    assert not command_line.traceback_wanted(["--log-level", "INFO", "DEBUG"])



@pytest.mark.parametrize("case", ["missing checkpoint", "not a checkpoint"])
def test_a_task_refusing_its_input_says_so_in_one_line_last(tmp_path, case):
    """CheckpointReport refuses a missing --checkpoint in complete() and a file that is not a checkpoint
    in run(): Luigi logged each with a 20-line traceback; now one line, repeated last after the summary."""
    from PIL import Image

    photos, text = tmp_path / "photos", tmp_path / "notes.txt"
    photos.mkdir()
    Image.new("RGB", (16, 16)).save(photos / "a.png")
    text.write_text("hello\n")
    gone = tmp_path / "gone.pt"
    checkpoint, says = {"missing checkpoint": (gone, f"--checkpoint '{gone}': no such file"),
                        "not a checkpoint": (text, f"checkpoint '{text}' (format 'auto'): not a checkpoint")}[case]
    res = luigi("CheckpointReport", "--checkpoint", checkpoint, "--images", photos, tmp_path=tmp_path / "out")
    assert res.returncode != 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("CheckpointReport ") and says in last, last
    assert not list(tmp_path.rglob("*.html"))
    if case == "not a checkpoint":
        debug = luigi("CheckpointReport", "--checkpoint", checkpoint, "--images", photos, "--log-level", "DEBUG",
                      tmp_path=tmp_path / "out")
        assert "Traceback" in debug.stderr and says in debug.stderr


def test_run_from_another_folder_still_exits_non_zero_on_failure(tmp_path):
    """Luigi reads luigi.cfg only from the working directory; from elsewhere its [retcode] was lost and
    a failed run exited 0 (a bad parameter 4)."""
    res = luigi("CheckpointReport", "--checkpoint", tmp_path / "gone.pt", "--images", tmp_path, tmp_path=tmp_path,
                cwd=tmp_path)
    assert res.returncode == 35, res.stderr[-2000:]                    # luigi.cfg [retcode] scheduling_error
    assert luigi("FullReport", "--seed", "-1", tmp_path=tmp_path, cwd=tmp_path).returncode == 40


def test_a_failed_task_record_is_one_line_only_for_input_errors():
    """The filter on Luigi's "failed" record: a refused input or a failed download (no network) becomes
    its one line and is kept for the last line; any other error keeps its traceback."""
    import logging

    from pipeline.command_line import OneLineErrors
    from pipeline.download import DownloadError

    class Task:
        task_family = "PreparedDataset"

    def record(error):
        return logging.LogRecord("luigi-interface", logging.ERROR, __file__, 1, "[pid %s] Worker %s failed    %s",
                                 (1, "w", Task()), (type(error), error, None))

    one_line = OneLineErrors([])
    rec = record(DownloadError("download of https://x/y.zip failed. To get the data by hand: git clone ..."))
    assert one_line.filter(rec) and rec.exc_info is None
    assert rec.getMessage().startswith("PreparedDataset failed: download of https://x/y.zip failed. To get")
    assert one_line.task_error.startswith("PreparedDataset failed: download of")
    rec = record(KeyError("a bug"))
    assert one_line.filter(rec) and rec.exc_info is not None and "failed    " in rec.getMessage()


def test_the_error_line_is_read_from_the_end_of_a_logged_traceback():
    from pipeline.command_line import traceback_error

    tb = ("Will not run T(x=1) or any dependencies due to error in complete() method:\nTraceback (most recent call "
          "last):\n  File \"a.py\", line 1, in f\n    raise ValueError(...)\nValueError: --images '/x' does not exist\n")
    assert traceback_error(tb) == "--images '/x' does not exist"
    assert traceback_error(tb.replace("ValueError", "FileNotFoundError")) == "--images '/x' does not exist"
    assert traceback_error(tb.replace("ValueError", "KeyError")) is None               # a bug: traceback kept
    chained = tb + "\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most " \
                   "recent call last):\n  File \"b.py\", line 2, in g\nmod.sub.Oops: boom\n"
    assert traceback_error(chained) is None                        # the last error is not a built-in input error


def test_the_clone_s_luigi_cfg_is_read_only_where_the_folder_has_no_config_of_its_own(tmp_path, monkeypatch):
    # Luigi reads client.cfg (its older name) from the working directory too; the clone's luigi.cfg,
    # added after it, overrode that folder's own settings
    import luigi.configuration

    from pipeline.command_line import project_config

    added = []
    monkeypatch.setattr(luigi.configuration, "add_config_path", added.append)
    monkeypatch.delenv("LUIGI_CONFIG_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_config() == str(ROOT / "luigi.cfg") and added == [str(ROOT / "luigi.cfg")]
    for own in ("client.cfg", "luigi.cfg"):
        (tmp_path / own).write_text("[retcode]\ntask_failed = 7\n")
        assert project_config() is None and len(added) == 1, own
        (tmp_path / own).unlink()
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(tmp_path / "mine.cfg"))
    assert project_config() is None and len(added) == 1
