"""The package's version, in one place below every layer (``pyproject.toml`` says the same)."""

__version__ = "0.1.0"
