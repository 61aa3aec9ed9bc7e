"""The ``medrobust`` command. Thin: parse arguments, call the library, print.

Each group of commands lives in its own module and registers itself on :data:`app`.
"""

from medrobust.cli import attack, data, defend, demo, detect, evaluate, guard, models, report, serve  # noqa: F401  (register)
from medrobust.cli.app import app

__all__ = ["app"]
