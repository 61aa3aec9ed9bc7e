"""``python -m medrobust``: the command line without the installed entry point."""

from medrobust.launch import main

if __name__ == "__main__":
    main()
