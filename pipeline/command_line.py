"""What ``luigi --module pipeline <Task>`` prints around the work: one line for a bad parameter, and
one line at the end naming where the result is.

Luigi's command line reports any exception raised while it reads the command line (a task's
``__init__`` checks every parameter there) as "Uncaught exception in luigi" with a 25-line
traceback around the one line that matters. :func:`install` adds a logging filter that turns such a
record into that line when the error is the user's (a ``ValueError``, an ``OSError`` or a Luigi
parameter error), keeping the traceback when the command line asks for ``--log-level DEBUG``; the
exit status stays luigi.cfg's ``[retcode] unhandled_exception``. It also registers an exit hook that,
once the requested task is complete, prints its output's path on stdout as the last line.

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

USER_ERRORS = (ValueError, OSError, LookupError)


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
    """Rewrite luigi's "Uncaught exception in luigi" record of a user error as that error's one line."""

    def __init__(self, argv):
        super().__init__()
        self.keep_traceback = traceback_wanted(argv)

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.getMessage() != "Uncaught exception in luigi" or error is None or not is_user_error(error):
            return True
        text = " ".join(str(error).split()) or type(error).__name__
        if self.keep_traceback:
            record.msg, record.args = text, ()
            return True
        record.msg, record.args = text + " (--log-level DEBUG shows the traceback)", ()
        record.exc_info, record.exc_text = None, None
        return True


def output_paths(task) -> list[str]:
    """Where a task's result is: its ``html`` output if it has one (a report), else every output."""
    import luigi

    outputs = task.output()
    if isinstance(outputs, dict) and "html" in outputs:
        outputs = outputs["html"]
    return [os.path.abspath(t.path) for t in luigi.task.flatten(outputs) if hasattr(t, "path")]


def announce(argv, out=None) -> str | None:
    """The last line of a successful run: the requested task's outputs, if it is complete. The command
    line is read again quietly (it has been read and reported once already); ``None`` when it cannot
    be, or the task is not complete."""
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
    if not paths:
        return None
    line = f"{task.task_family}: " + ", ".join(paths)
    print(line, file=out or sys.stdout, flush=True)
    return line


def install(argv=None) -> bool:
    """Under Luigi's command line, the one-line error filter and the exit announcement; returns whether installed."""
    if not under_luigi_command_line():
        return False
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.getLogger("luigi-interface").addFilter(OneLineErrors(argv))
    atexit.register(announce, argv)
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
