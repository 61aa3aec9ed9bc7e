"""Record ids as valid Unicode text: see :mod:`medrobust.printable`, where the escaping lives
(file names are text the CLI prints too, not only data)."""

from medrobust.printable import printable_path, printable_text

__all__ = ["printable_path", "printable_text"]
