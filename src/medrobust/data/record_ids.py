"""Record ids as valid Unicode text: see :mod:`medrobust.files.printable`, where the escaping lives
(file names are text the CLI prints too, not only data)."""

from medrobust.files.printable import printable_path, printable_text

__all__ = ["printable_path", "printable_text"]
