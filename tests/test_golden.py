"""The shipped specs' print files are what they were when tests/golden/shipped_specs.json
was recorded (`make golden`): byte for byte on a CPU of a recorded instruction set, and
within 0.5/255 per 16 x 16 block mean of every ink on any other."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.golden.shipped import RECORD, SMALL, cpu_capability, fingerprint

GOLDEN = json.loads(RECORD.read_text())


@pytest.mark.parametrize("spec_name", sorted(SMALL))
def test_shipped_spec_outputs_are_unchanged(spec_name, tmp_path):
    now = fingerprint(spec_name, tmp_path)
    then = GOLDEN["prints"][spec_name]
    assert (now["file"], now["shape"], now["dtype"]) == \
        (then["file"], then["shape"], then["dtype"])
    assert np.abs(np.array(now["block_means"]) - np.array(then["block_means"])).max() <= 0.5
    recorded = GOLDEN["sha256"].get(cpu_capability())
    if recorded is None:
        warnings.warn(f"no file hashes recorded for CPU capability {cpu_capability()} "
                      f"(recorded: {', '.join(GOLDEN['sha256'])}); bytes not compared",
                      stacklevel=1)
    else:
        assert now["sha256"] == recorded[spec_name], "the print file's bytes changed"
