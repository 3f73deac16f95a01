"""k2_distill."""

from importlib.metadata import version as _version

__version__ = _version("k2-distill")
__all__ = ["__version__"]
