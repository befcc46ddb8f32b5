"""The checked outputs of an s3:// job whose upload failed, kept for the next run.

By the upload, a job has rendered, assembled, proofed and preflighted its print: hours of
a large job's work. If the store then fails (an outage longer than the retries), the
outputs stay in the job's private staging directory with a record of what passed
(`NAME-DIGEST.checked.json`: each output's name and sha256, the ink maximum). The next run
of the same job finds them, verifies every byte against the record and uploads them,
without rendering again; outputs that are missing or changed are dropped and the job
renders as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from texprod.files import atomic_write_bytes, sha256_file
from texprod.job.plan import JobPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptOutputs:
    hashes: dict[Path, str]  # every local output of the plan: its verified sha256
    tac_max: float | None  # the ink maximum measured when the stripes were rendered


def keep_for_rerun(plan: JobPlan, outputs: list[dict], tac_max: float | None) -> None:
    """Record the checked `outputs` (output_records) of an s3:// job before its upload."""
    if plan.outputs.remote_dir is None:
        return
    record = {"spec_digest": plan.spec_digest, "tac_max": tac_max,
              "outputs": {o["name"]: o["sha256"] for o in outputs}}
    atomic_write_bytes(_record_path(plan), json.dumps(record, indent=1).encode())


def is_kept(plan: JobPlan) -> bool:
    return plan.outputs.remote_dir is not None and _record_path(plan).exists()


def release_kept(plan: JobPlan) -> None:
    """Forget the record: the outputs were uploaded (or are dropped)."""
    _record_path(plan).unlink(missing_ok=True)


def take_kept(plan: JobPlan) -> KeptOutputs | None:
    """The outputs an earlier run of this job checked and could not upload, if every one
    of them is still there, byte for byte (each is read once to verify it). Otherwise
    None, with the record and the leftovers removed so that the job renders anew."""
    if not is_kept(plan):
        return None
    directory, expected = plan.outputs.tiff.parent, {}
    try:
        record = json.loads(_record_path(plan).read_text())
        expected = dict(record["outputs"])
        hashes = {p: sha256_file(p) for p in plan.outputs.local}
        intact = (record["spec_digest"] == plan.spec_digest
                  and {p.name: h for p, h in hashes.items()} == expected)
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        release_kept(plan)
        log.warning("output: the outputs an earlier run kept in %s are incomplete or "
                    "changed: rendering them again", directory)
        # this plan's outputs, and those of the record that this plan no longer makes
        for path in {*plan.outputs.local, *(directory / Path(name).name for name in expected)}:
            path.unlink(missing_ok=True)
        return None
    log.info("output: uploading the checked outputs an earlier run kept in %s, without "
             "rendering again", plan.outputs.tiff.parent)
    return KeptOutputs(hashes, record.get("tac_max"))


def kept_note(plan: JobPlan) -> str:
    return (f"the checked outputs are kept in {plan.outputs.tiff.parent}: run the same job "
            "again to upload them without rendering")


def _record_path(plan: JobPlan) -> Path:
    tiff = plan.outputs.tiff
    return tiff.with_name(tiff.stem + ".checked.json")
