"""Model references resolved to a local checkpoint directory: `bundled:NAME`, a path,
`s3://bucket/prefix/NAME` (through the model cache) and `NAME@VERSION` from the registry.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from texprod.errors import SpecError
from texprod.models import registry as model_registry
from texprod.models.cache import fetch_model
from texprod.storage import (  # the transport's own helpers: heads, etags, reads
    is_s3,
)

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = resources.files("texprod") / "data" / "models"


def bundled_models() -> list[str]:
    root = Path(str(BUNDLED_DIR))
    return sorted(p.name for p in root.iterdir() if (p / "model.json").is_file()) \
        if root.is_dir() else []


def resolve_model(ref: str, base_dir: str | os.PathLike | None = None, *,
                  registry: str | None = None) -> Path:
    """A spec's `model` as a local checkpoint path.

    - `bundled:NAME` names a model shipped in the package;
    - `s3://bucket/prefix/NAME` is a checkpoint directory on S3, fetched via the model cache;
    - `NAME@VERSION` is a model in the registry (`registry`, else env TEXPROD_REGISTRY);
    - anything else is a path: a relative one is looked up from the working directory, then
      from `base_dir` (the spec file's directory).
    """


    if ref.startswith(BUNDLED_PREFIX):
        name = ref.removeprefix(BUNDLED_PREFIX)
        path = Path(str(BUNDLED_DIR / name))
        if not (path / "model.json").is_file():
            shipped = ", ".join(bundled_models()) or "none yet"
            raise SpecError(f"model: got {ref!r}, no such bundled model (shipped: {shipped}); "
                            "use a checkpoint path (texprod models init --out PATH makes one)")
        return path
    if is_s3(ref):
        return fetch_model(ref)
    if model_registry.is_ref(ref):
        return model_registry.pull(ref, registry)
    if "://" in ref:
        raise SpecError(f"model: got {ref!r}; supported: a checkpoint path, bundled:NAME, "
                        "s3://BUCKET/PREFIX (a checkpoint directory) or NAME@VERSION "
                        "(the model registry)")
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        beside_spec = Path(base_dir) / path
        if beside_spec.exists():
            return beside_spec
    if not path.exists():
        raise SpecError(f"model: got {ref!r}, no such checkpoint (looked in {Path.cwd()}"
                        + (f" and {base_dir}" if base_dir else "") + ")")
    return path
