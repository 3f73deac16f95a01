"""k2_expander."""

from importlib.metadata import version as _version

__version__ = _version("k2-expander")
__all__ = ["__version__"]
