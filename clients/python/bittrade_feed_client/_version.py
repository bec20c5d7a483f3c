"""The package version (read by the build backend, sent as the User-Agent)."""

__version__ = "0.1.0"
