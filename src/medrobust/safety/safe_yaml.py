"""Read a medrobust configuration file (YAML) without letting the file exhaust memory.

``yaml.safe_load`` refuses Python objects but still expands anchors and aliases: the
"billion laughs" document (nine levels of ``&a [*b, *b, ...]``) is a few hundred bytes and
builds a structure of 10**9 references, and a slightly larger one filled 5.4 GB before it
finished. A configuration file has no need for aliases, so :func:`load_yaml_mapping` refuses
them before anything is composed, by walking the parser's events (which are produced one by
one and never expand an alias), and reads at most ``max_bytes`` of the file, so neither a
huge file nor a small hostile one costs more than a bounded amount of memory and time.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1_000_000
"""Largest configuration file read: about 10,000 times a real one."""

MAX_NESTING = 64
"""Deepest nesting of mappings and sequences accepted: a real configuration uses three or four
levels, and the composer recurses once per level, so ``[[[[...`` a megabyte deep would
otherwise end in a RecursionError instead of a message."""

_NO_ANCHORS = "write the values out; medrobust config files may not use YAML anchors or aliases"


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; ``str(err)`` names the file, the problem and the fix."""


def load_yaml_mapping(path: str | os.PathLike[str], max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """The top-level mapping of the YAML file at ``path``, read with ``yaml.SafeLoader``.

    Refused with :class:`ConfigFileError` (a ``ValueError``): a file over ``max_bytes``
    (checked from its size first, then by reading at most ``max_bytes + 1`` bytes, in case it
    grows or is a pipe), any anchor (``&name``) or alias (``*name``), text that is not valid
    YAML or not UTF-8, and a document that is not a mapping. A missing file raises
    :class:`FileNotFoundError` naming it. An empty file gives ``{}``.
    """
    path = Path(path)
    return yaml_text_mapping(_read_bounded(path, max_bytes), str(path))


def yaml_text_mapping(text: str, where: str) -> dict[str, Any]:
    """The top-level mapping of YAML ``text`` (the bounded part of :func:`load_yaml_mapping`,
    for a configuration received as text, such as the service's ``config`` field); ``where``
    names it in errors. The caller bounds the text's length."""
    try:
        _check_events(text, where)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{where}: not valid YAML ({_one_line(err)}); fix the syntax at the place named") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{where}: holds a YAML {type(data).__name__}, not a mapping of settings; "
            "write it as 'key: value' lines (see the example configurations)"
        )
    return data


def _read_bounded(path: Path, max_bytes: int) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: configuration file not found; check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigFileError(f"{path}: is a folder, not a configuration file; pass the .yaml file")
    if info.st_size > max_bytes:
        raise _too_big(path, f"{info.st_size:,}", max_bytes)
    with path.open("rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew since the stat, or is a pipe or a special file
        raise _too_big(path, f"more than {max_bytes:,}", max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigFileError(
            f"{path}: is not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8"
        ) from None


def _too_big(path: Path, size: str, max_bytes: int) -> ConfigFileError:
    return ConfigFileError(
        f"{path}: is {size} bytes, over the {max_bytes:,}-byte limit for a configuration file; "
        "a real configuration is a few kilobytes, so check that this is the right file"
    )


def _check_events(text: str, path: Path | str) -> None:
    """Raise at the first anchor or alias, or at nesting past :data:`MAX_NESTING`; the event
    stream never expands an alias and holds one event at a time."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise ConfigFileError(
                    f"{path}: line {event.start_mark.line + 1} nests mappings or sequences more than "
                    f"{MAX_NESTING} levels deep; a configuration needs a few levels, so check that this is the right file"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.AliasEvent):
            what = f"an alias *{event.anchor}"
        elif getattr(event, "anchor", None) is not None:
            what = f"an anchor &{event.anchor}"
        else:
            continue
        line = event.start_mark.line + 1 if event.start_mark is not None else "?"
        raise ConfigFileError(f"{path}: line {line} uses {what}; {_NO_ANCHORS}")


def _one_line(err: yaml.YAMLError) -> str:
    return " ".join(str(err).split())
