"""What ``luigi --module pipeline <Task>`` prints around the work: one line for a bad parameter, and
one line at the end naming where the result is.

Luigi's command line reports any exception raised while it reads the command line (a task's
``__init__`` checks every parameter there) as "Uncaught exception in luigi" with a 25-line
traceback around the one line that matters. :func:`install` adds a logging filter that turns such a
record into that line when the error is the user's (a ``ValueError``, an ``OSError`` or a Luigi
parameter error), keeping the traceback when the command line asks for ``--log-level DEBUG``; the
exit status stays luigi.cfg's ``[retcode] unhandled_exception``.

A task can also refuse its input later: in ``complete()`` (``CheckpointReport`` hashes its
``--checkpoint`` and lists its ``--images`` there) or in ``run()`` (a file that is not a checkpoint).
Luigi logs those with a traceback too; when the error is a ``ValueError`` or an ``OSError`` (how this
project refuses bad input), or a failed download, the filter makes it the one line as well, and the exit hook repeats it as
the last line on stderr, after Luigi's summary. Once the requested task is complete, the exit hook
instead prints its output's path on stdout as the last line.

Run in a folder without a luigi.cfg, it reads the clone's (:func:`project_config`).

Installed only under Luigi's own command line (``luigi`` or ``python -m luigi``), never in a test
or a library that imports the tasks.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import sys

from danet.cli import one_line                  # an error's message on one line, as danet prints it
from pipeline.download import DownloadError     # no network, a server error: said in one line with what to do

USER_ERRORS = (ValueError, OSError, LookupError)      # raised while the command line is read
RUN_ERRORS = (ValueError, OSError)                    # raised by a task's complete() or run() on bad input
DEBUG_HINT = " (--log-level DEBUG shows the traceback)"


def under_luigi_command_line() -> bool:
    """True in the ``luigi`` program (which imports ``luigi.cmdline`` before the task module)."""
    return "luigi.cmdline" in sys.modules


def traceback_wanted(argv) -> bool:
    """``--log-level DEBUG`` (or ``--log-level=DEBUG``) on the command line."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--log-level=DEBUG" or (a == "--log-level" and argv[i + 1:i + 2] == ["DEBUG"]):
            return True
    return False


def is_user_error(error: BaseException) -> bool:
    import luigi.parameter

    return isinstance(error, USER_ERRORS + (luigi.parameter.ParameterException,))


class OneLineErrors(logging.Filter):
    """Rewrite luigi's records of a user error (parameter, ``complete()``, ``run()``) as that error's one
    line; the last one from a task is kept in ``task_error`` for the exit hook."""

    def __init__(self, argv):
        super().__init__()
        self.keep_traceback = traceback_wanted(argv)
        self.task_error = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if message == "Uncaught exception in luigi" and is_user_error(error):
            text = one_line(error)
        elif message.startswith("Will not run ") and (text := traceback_error(message)):
            text = f"{message[len('Will not run '):].split('(')[0]} not run: {text}"
            self.task_error = text
        elif " failed    " in message and isinstance(error, RUN_ERRORS + (DownloadError,)) and record.args:
            text = f"{getattr(record.args[-1], 'task_family', record.args[-1])} failed: {one_line(error)}"
            self.task_error = text
        else:
            return True
        if self.keep_traceback:
            record.msg, record.args = (message if message.startswith("Will not run ") else text), ()
            return True
        record.msg, record.args = text + DEBUG_HINT, ()
        record.exc_info, record.exc_text = None, None
        return True


def traceback_error(message: str) -> str | None:
    """The error's own line from a traceback Luigi logged as text (``ValueError: --images ...``), when
    the error is a built-in ``ValueError`` or ``OSError`` (or a subclass); else ``None``."""
    import builtins

    lines = [line for line in message.splitlines() if line.strip() and not line[:1].isspace()]
    name, sep, text = lines[-1].partition(": ") if lines else ("", "", "")
    kind = getattr(builtins, name, None) if sep and name.isidentifier() else None
    ok = isinstance(kind, type) and issubclass(kind, RUN_ERRORS)
    return " ".join(text.split()) if ok else None


def output_paths(task) -> list[str]:
    """Where a task's result is: its ``html`` output if it has one (a report), else every output."""
    import luigi

    outputs = task.output()
    if isinstance(outputs, dict) and "html" in outputs:
        outputs = outputs["html"]
    return [os.path.abspath(t.path) for t in luigi.task.flatten(outputs) if hasattr(t, "path")]


def announce(argv, out=None, errors=None) -> str | None:
    """The last line of a run: the requested task's outputs, if it is complete, on stdout; otherwise
    the input error a task refused (``errors.task_error``, a :class:`OneLineErrors`) on stderr. The
    command line is read again quietly (it has been read and reported once already); ``None`` when
    there is nothing to say."""
    paths = finished_outputs(argv)
    if paths is None:
        line = getattr(errors, "task_error", None)
        if line:
            print(line, file=sys.stderr, flush=True)
        return line
    print(paths, file=out or sys.stdout, flush=True)
    return paths


def finished_outputs(argv) -> str | None:
    """``"Task: path, ..."`` of the requested task if it is complete, else ``None``."""
    import luigi.cmdline_parser

    if {"--help", "--help-all", "-h"} & set(argv):
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), \
                luigi.cmdline_parser.CmdlineParser.global_instance(list(argv)) as parser:
            task = parser.get_task_obj()
            if not task.complete():
                return None
            paths = output_paths(task)
    except (Exception, SystemExit):
        return None
    return f"{task.task_family}: " + ", ".join(paths) if paths else None


def project_config() -> str | None:
    """Read the clone's luigi.cfg when ``luigi`` runs in another folder (Luigi reads ``luigi.cfg`` only
    from the working directory): without it a failed run exits 0 ([retcode]). Not when the working
    directory has its own luigi.cfg (or client.cfg, Luigi's older name, which it reads there too) or
    ``LUIGI_CONFIG_PATH`` names one: the clone's would be read after it and override it. Returns the path added."""
    import luigi.configuration

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "luigi.cfg")
    own = any(os.path.isfile(name) for name in ("luigi.cfg", "client.cfg"))
    if own or "LUIGI_CONFIG_PATH" in os.environ or not os.path.isfile(path):
        return None
    luigi.configuration.add_config_path(path)
    return path


def install(argv=None) -> bool:
    """Under Luigi's command line, the one-line error filter and the exit announcement; returns whether installed."""
    if not under_luigi_command_line():
        return False
    argv = sys.argv[1:] if argv is None else list(argv)
    project_config()
    errors = OneLineErrors(argv)
    logging.getLogger("luigi-interface").addFilter(errors)
    atexit.register(announce, argv, errors=errors)
    return True


def json_dict_parameter(flag: str, example: str, **kwargs):
    """A ``luigi.DictParameter`` whose unreadable value is refused naming ``flag``, the example and what was given."""
    import json
    from collections.abc import Mapping

    import luigi

    class JSONDictParameter(luigi.DictParameter):
        def parse(self, x):
            try:
                value = super().parse(x)
            except json.JSONDecodeError as e:
                raise ValueError(f"{flag}: expected a JSON object such as {example}, got {x!r} ({e})") from None
            if not isinstance(value, Mapping):
                raise ValueError(f"{flag}: expected a JSON object such as {example}, got {x!r}")
            return value

    return JSONDictParameter(**kwargs)
