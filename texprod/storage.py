"""Where things are: model references and output locations.

For now: local paths and models bundled with the package (`bundled:NAME`); S3 URIs and the
model registry come with the production-job work.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from texprod.errors import SpecError

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = resources.files("texprod") / "data" / "models"


def bundled_models() -> list[str]:
    root = Path(str(BUNDLED_DIR))
    return sorted(p.name for p in root.iterdir() if (p / "model.json").is_file()) \
        if root.is_dir() else []


def resolve_model(ref: str, base_dir: str | os.PathLike | None = None) -> Path:
    """A spec's `model` as a local checkpoint path.

    `bundled:NAME` names a model shipped in the package; a relative path is looked up from
    the working directory, then from `base_dir` (the spec file's directory).
    """
    if ref.startswith(BUNDLED_PREFIX):
        name = ref.removeprefix(BUNDLED_PREFIX)
        path = Path(str(BUNDLED_DIR / name))
        if not (path / "model.json").is_file():
            shipped = ", ".join(bundled_models()) or "none yet"
            raise SpecError(f"model: got {ref!r}, no such bundled model (shipped: {shipped}); "
                            "use a checkpoint path (texprod models init --out PATH makes one)")
        return path
    if "://" in ref:
        raise SpecError(f"model: got {ref!r}; only local paths and bundled:NAME are supported "
                        "here")
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        beside_spec = Path(base_dir) / path
        if beside_spec.exists():
            return beside_spec
    if not path.exists():
        raise SpecError(f"model: got {ref!r}, no such checkpoint (looked in {Path.cwd()}"
                        + (f" and {base_dir}" if base_dir else "") + ")")
    return path
