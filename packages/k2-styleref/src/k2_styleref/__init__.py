"""k2_styleref."""

from importlib.metadata import version as _version

__version__ = _version("k2-styleref")
__all__ = ["__version__"]
