"""The stripe spool: finished stripes, encoded, on the driver's local disk.

Stripes finish in any order (threads, Dask workers); each is written here as it arrives
and dropped from memory, so the driver holds no more than one stripe whatever the print
size. The file is assembled from the spool in order once every stripe is in. Each stripe
is a data file (its chunks, then its preview) and a small JSON record written after it,
so a stripe is in the spool only when complete: a driver killed mid-job leaves finished
stripes that a rerun of the same job (same identity) keeps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from texprod.files import atomic_output
from texprod.job.stripes import StripeResult


class StripeSpool:
    def __init__(self, directory: Path, identity: dict):
        """Open the spool in `directory`; one of another identity is started afresh."""
        self.directory = Path(directory)
        self.identity = identity
        marker = self.directory / "identity.json"
        try:
            same = json.loads(marker.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(mode=0o700, parents=True)
            _write_atomic(marker, json.dumps(identity).encode())
        self._records: dict[int, dict] = {}
        for path in self.directory.glob("stripe-*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            data = self._data_path(record["index"])
            if data.exists() and data.stat().st_size == record["bytes"]:
                self._records[record["index"]] = record

    def _data_path(self, index: int) -> Path:
        return self.directory / f"stripe-{index:06d}.bin"

    @property
    def done(self) -> set[int]:
        return set(self._records)

    def put(self, result: StripeResult) -> None:
        """Store a finished stripe (data first, then its record: both or neither count)."""
        _write_atomic(self._data_path(result.index), result.data, result.preview)
        record = {"index": result.index, "chunk_sizes": result.chunk_sizes,
                  "preview_shape": list(result.preview_shape), "tac_max": result.tac_max,
                  "tiles": result.tiles,
                  "bytes": len(result.data) + len(result.preview)}
        _write_atomic(self.directory / f"stripe-{result.index:06d}.json",
                      json.dumps(record).encode())
        self._records[result.index] = record

    def tac_max(self) -> float | None:
        values = [r["tac_max"] for r in self._records.values() if r["tac_max"] is not None]
        return max(values) if values else None

    def chunks(self, count: int, consume: bool = False,
               between: Callable[[], None] | None = None) -> Iterator[bytes]:
        """The chunks of stripes 0 .. count-1, in file order; `consume` deletes each
        stripe's data once read, so the spool shrinks as the file grows (disk: ~1x);
        `between` is called before each stripe (a safe point to stop)."""
        for index in range(count):
            if between is not None:
                between()
            record = self._records[index]
            path = self._data_path(index)
            with open(path, "rb") as fh:
                for size in record["chunk_sizes"]:
                    yield fh.read(size)
            if consume:
                path.unlink()

    def preview(self, count: int) -> np.ndarray:
        """The stripes' previews stacked: (rows, cols, 3) uint8 sRGB."""
        parts = []
        for index in range(count):
            record = self._records[index]
            rows, cols = record["preview_shape"]
            with open(self._data_path(index), "rb") as fh:
                fh.seek(sum(record["chunk_sizes"]))
                parts.append(np.frombuffer(fh.read(rows * cols * 3), np.uint8)
                             .reshape(rows, cols, 3))
        return np.concatenate(parts, axis=0)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_atomic(path: Path, *parts: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
