"""The package version, in a module of its own: whoever needs it (a run's metrics, a checkpoint,
the report) imports it from here without running the package's public-layer ``__init__``."""

__version__ = "0.1.0"
