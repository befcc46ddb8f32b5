"""Run logs an operator can read: an expected failure is one ERROR line, without traceback.

Prefect logs a failing task or flow four times, two with a traceback ("Task run failed
with exception ...", "Encountered exception during execution ...", and "Finished in state
Failed(...)" for both). For a `TexprodError` (a bad spec, a missing model, bad credentials,
ink over the limit: something the user fixes, whose message says how) this filter keeps
one line: the flow's, reworded to the cause and without traceback. The task's lines and
the "Finished in state" lines of such failures drop to INFO. Any other exception is a bug:
its records keep their tracebacks, and the flow's says that it is one.
"""

from __future__ import annotations

import logging

from texprod.errors import TexprodError

LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def _expected_names() -> set[str]:
    """Class names of every TexprodError, as Prefect writes them into state messages."""
    names, todo = set(), [TexprodError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _demote(record: logging.LogRecord) -> None:
    record.levelno, record.levelname = logging.INFO, "INFO"


class ExpectedErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TexprodError):
            record.exc_info = record.exc_text = None  # no traceback
            record.texprod_expected = True  # `texprod generate` prints these itself
            if record.name.startswith("prefect.task_runs"):
                _demote(record)  # the flow reports the cause once
                record.msg, record.args = "failed: %s", (error,)
                return True
            if getattr(error, "_texprod_reported", False):
                return False  # a deployment run's engine logs the same exception twice
            error._texprod_reported = True
            record.msg, record.args = "job failed: %s", (error,)
            return True
        if error is not None and record.name.startswith("prefect.flow_runs") \
                and record.levelno >= logging.ERROR:  # say that the traceback is a bug
            record.msg = f"{record.msg} (a bug in texprod, not a problem with the job's " \
                "input: please report it with this traceback)"
            return True
        if record.levelno >= logging.ERROR and isinstance(record.msg, str) \
                and record.msg.startswith("Finished in state Failed") \
                and any(f"{name}: " in record.msg or f"{name}(" in record.msg
                        for name in _expected_names()):
            _demote(record)  # the state itself still says Failed, with the message
        return True


def quiet_expected_errors() -> None:
    """Install the filter on Prefect's run loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedErrorFilter) for f in logger.filters):
            logger.addFilter(ExpectedErrorFilter())
