"""k2_recipes."""

from importlib.metadata import version as _version

__version__ = _version("k2-recipes")
__all__ = ["__version__"]
