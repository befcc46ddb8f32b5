"""One exception hierarchy for everything texprod reports to a user.

User errors name the field, the value and what is allowed (`shorten` bounds the value), e.g.
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


def shorten(value: object, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: an error never prints an unbounded value.

    The repr of a huge or deeply shared structure is itself huge, so it is built from a
    bounded walk, not from repr() of the whole value.
    """
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _bounded_repr(value: object, budget: int) -> str:
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else value
        open_, close = ("{", "}") if isinstance(value, dict) else ("[", "]")
        parts, used = [], 1
        for item in items:
            if used >= budget:
                parts.append("…")
                break
            text = (f"{_bounded_repr(item[0], budget - used)}: "
                    f"{_bounded_repr(item[1], budget - used)}" if isinstance(value, dict)
                    else _bounded_repr(item, budget - used))
            parts.append(text)
            used += len(text) + 2
        return open_ + ", ".join(parts) + close
    text = repr(value)
    return text if len(text) <= budget else text[:budget] + "…"
