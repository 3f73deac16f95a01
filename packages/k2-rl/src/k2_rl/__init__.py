"""k2_rl."""

from importlib.metadata import version as _version

__version__ = _version("k2-rl")
__all__ = ["__version__"]
