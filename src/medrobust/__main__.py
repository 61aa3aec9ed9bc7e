"""``python -m medrobust``: the command line without the installed entry point."""

from medrobust.cli import app

if __name__ == "__main__":
    app(prog_name="medrobust")
