"""The package version, apart from `__init__.py` so that modules inside can read it."""

__version__ = "0.1.0"
