"""k2_data."""

from importlib.metadata import version as _version

__version__ = _version("k2-data")
__all__ = ["__version__"]
