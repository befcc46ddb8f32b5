"""texprod: huge, seamless, print-ready textures from neural texture generators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("texprod")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from texprod.errors import TexprodError  # noqa: E402

__all__ = ["TexprodError", "__version__"]
