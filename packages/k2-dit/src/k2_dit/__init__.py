"""k2_dit."""

from importlib.metadata import version as _version

__version__ = _version("k2-dit")
__all__ = ["__version__"]
