"""The package version; pyproject.toml's [project] version is the same (a test checks)."""

__version__ = "0.1.0"
