"""The version of rapidws."""

__all__ = ["__version__"]

__version__ = "0.1.0"
