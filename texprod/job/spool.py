"""The stripe spool: finished stripes, encoded, and the print file they grow.

Stripes finish in any order (threads, Dask workers). A stripe whose predecessors are all
in the print file is appended to it at once (`press.tiff_stream.GrowingTiff`), so the file
grows while later stripes render; one that arrives early waits here as a data file until
its turn. Either way it is dropped from memory: the driver holds no more than one stripe
whatever the print size, and the disk holds the file plus the early stripes.

Each stripe has a small JSON record, written after its data: its chunk sizes, preview
shape, ink and, once in the file, the file's size after it. A stripe counts only when its
record is there, so a driver killed mid-job leaves a valid state: a rerun of the same job
(same identity) truncates the file to the last recorded stripe, appends the early
stripes that are next, and renders only the rest. Previews (small) stay in the spool for
the proof.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np

from texprod.files import atomic_output
from texprod.job.stripes import StripeResult
from texprod.press.tiff_stream import GrowingTiff, TiffTags


class StripeSpool:
    def __init__(self, directory: Path, identity: dict, tiff: Path, bigtiff: bool):
        """Open the spool in `directory` and its print file `tiff` (growing under a hidden
        name beside it); a spool of another identity is started afresh."""
        self.directory = Path(directory)
        self.identity = identity
        self.growing = tiff.with_name(f".{tiff.name}.growing")
        marker = self.directory / "identity.json"
        try:
            same = json.loads(marker.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(mode=0o700, parents=True)
            _write_atomic(marker, json.dumps(identity).encode())
        self._lock = threading.Lock()
        self._records: dict[int, dict] = {}
        for path in self.directory.glob("stripe-*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if self._preview_path(record["index"]).exists() and (
                    "file_end" in record or self._data_size(record["index"]) == record["bytes"]):
                self._records[record["index"]] = record
        # the stripes already in the file: the run of recorded ones from the top
        self.assembled = 0
        while "file_end" in self._records.get(self.assembled, {}):
            self.assembled += 1
        end = self._records[self.assembled - 1]["file_end"] if self.assembled else None
        self.file = GrowingTiff(self.growing, bigtiff, resume_at=end)
        if end is not None and not self.file.resumed:  # the file is gone: so are they
            self.assembled = 0
        for index, record in list(self._records.items()):
            if "file_end" in record and index >= self.assembled:
                del self._records[index]  # in a lost file, or past a gap
            elif "file_end" in record:
                self._data_path(index).unlink(missing_ok=True)  # appended, then killed
        self._append_waiting()

    def _data_path(self, index: int) -> Path:
        return self.directory / f"stripe-{index:06d}.bin"

    def _preview_path(self, index: int) -> Path:
        return self.directory / f"stripe-{index:06d}.preview"

    def _record_path(self, index: int) -> Path:
        return self.directory / f"stripe-{index:06d}.json"

    def _data_size(self, index: int) -> int | None:
        try:
            return self._data_path(index).stat().st_size
        except OSError:
            return None

    @property
    def done(self) -> set[int]:
        return set(self._records)

    def put(self, result: StripeResult) -> None:
        """Store a finished stripe: into the file if it is next, else here until it is."""
        record = {"index": result.index, "chunk_sizes": result.chunk_sizes,
                  "preview_shape": list(result.preview_shape), "tac_max": result.tac_max,
                  "tiles": result.tiles, "bytes": len(result.data)}
        with self._lock:
            _write_atomic(self._preview_path(result.index), result.preview)
            if result.index == self.assembled:
                self._append(record, result.data)
                self._append_waiting()
            else:
                _write_atomic(self._data_path(result.index), result.data)
                self._write_record(record)

    def _append(self, record: dict, data: bytes) -> None:
        record["file_end"] = self.file.append(data)
        self._write_record(record)
        self.assembled += 1

    def _append_waiting(self) -> None:
        """Append the early stripes whose turn has come."""
        while self.assembled in self._records:
            index = self.assembled
            self._append(dict(self._records[index]), self._data_path(index).read_bytes())
            self._data_path(index).unlink()

    def _write_record(self, record: dict) -> None:
        _write_atomic(self._record_path(record["index"]), json.dumps(record).encode())
        self._records[record["index"]] = record

    def tac_max(self) -> float | None:
        values = [r["tac_max"] for r in self._records.values() if r["tac_max"] is not None]
        return max(values) if values else None

    def finish(self, tags: TiffTags, count: int, dest: Path) -> int:
        """Complete the file of `count` stripes with its IFD and rename it to `dest`
        (it appears only complete); returns its size."""
        if self.assembled != count:
            raise ValueError(f"{self.assembled} of {count} stripes are in the file")
        sizes = [s for i in range(count) for s in self._records[i]["chunk_sizes"]]
        size = self.file.finish(tags, sizes)
        self.file.close()
        self.growing.replace(dest)
        return size

    def preview(self, count: int) -> np.ndarray:
        """The stripes' previews stacked: (rows, cols, 3) uint8 sRGB."""
        parts = []
        for index in range(count):
            rows, cols = self._records[index]["preview_shape"]
            data = self._preview_path(index).read_bytes()
            parts.append(np.frombuffer(data, np.uint8).reshape(rows, cols, 3))
        return np.concatenate(parts, axis=0)

    def remove(self) -> None:
        """Drop the spool and any unfinished file."""
        self.file.close()
        self.growing.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        """Leave the spool and the file for a rerun (a job that is stopped)."""
        self.file.close()


def _write_atomic(path: Path, *parts: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
