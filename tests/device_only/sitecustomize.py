"""Makes this interpreter's imports fail, as on the lent GPU machine, for the top-level
modules named in TEXPROD_HIDDEN_MODULES (comma-separated): the installed distributions
that machine's image lacks and `make gpu-wheels` does not carry. tests/test_gpu_check.py
puts this folder on PYTHONPATH for the check's dry run, so that every process the check
starts (its steps, pytest) imports only what the device will have."""

import os
import sys

HIDDEN = frozenset(filter(None, os.environ.get("TEXPROD_HIDDEN_MODULES", "").split(",")))


class NotOnTheDevice:
    """A meta path finder consulted first: a hidden module is not found, whatever
    site-packages holds."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine: "
                                      "add it to `make gpu-wheels` or import it lazily)",
                                      name=name)
        return None


if HIDDEN:
    sys.meta_path.insert(0, NotOnTheDevice)
