"""One exception hierarchy for everything texprod reports to a user.

User errors name the field, the value and what is allowed, e.g.
``--tile: got -3, must be 0 (one pass) or a positive number of pixels``.
"""


class TexprodError(Exception):
    """Base class: a problem the user can fix, with a message that says how.

    `texprod` prints it in one line, without traceback, and exits with `exit_code`:
    2 for input to fix (spec, options, model, paths), 1 for a job that failed (JobFailure).
    """

    exit_code = 2


class JobFailure(TexprodError):
    """A valid job that could not be completed: a full disk, a store that kept failing, a
    file that did not keep its promise. Running it again may succeed."""

    exit_code = 1


class ConfigError(TexprodError):
    """An invalid option, spec field or architecture setting."""


class CheckpointError(TexprodError):
    """A generator checkpoint that is missing, corrupt or inconsistent."""


class RenderError(TexprodError):
    """A render that cannot be carried out as asked (device, size, memory)."""


class SpecError(ConfigError):
    """An invalid job spec; the message names the field, the value and the YAML line."""
