"""pydantic's report on a bad configuration, as a user should read it: one line per setting."""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    ValidationError,
)


def invalid_configuration(err: ValidationError, where: str | None = None, what: str = "configuration",
                          show_values: bool = True) -> ValueError:
    """pydantic's report as the user should read it: one line per setting, named by its place in
    the file (``attacks[0].eps_sweep``), saying what is wrong and, for pydantic's own checks, the
    value given (unless ``show_values`` is False: the service echoes no value it filled in); no
    error codes, no links. The alternatives of a union (``split``: ``test`` or three fractions)
    are one line. ``where``: the file or field it came from; ``what``: what was being read (any
    pydantic model's errors read the same way)."""
    fields: dict[str, list[str]] = {}
    for error in err.errors(include_url=False):
        path, message = _located(error, show_values)
        fields.setdefault(path, [])
        if message not in fields[path]:
            fields[path].append(message)
    lines = [f"{path or 'configuration'}: {' or '.join(messages)}" for path, messages in fields.items()]
    head = f"{where}: invalid {what}" if where else f"invalid {what}"
    if len(lines) == 1:
        return ValueError(f"{head}: {lines[0]}")
    return ValueError(f"{head} ({len(lines)} settings):\n" + "\n".join(f"  {line}" for line in lines))


_UNION_MEMBER = re.compile(r"^(literal|tuple|list|dict|set|frozenset|function-[a-z]+|union|tagged-union|nullable|"
                           r"is-instance|chain|lax-or-strict|json-or-python)\[|^(int|float|str|bool|bytes|none)$")
"""How pydantic names the member of a union that an error is about (``literal['test']``)."""
_SECTION_NAMES = frozenset({"DataConfig", "TrainSection", "LoadSection", "ModelConfig", "SurrogateConfig",
                            "AttackConfig", "AdaptiveConfig", "ReferenceDetectorConfig", "SqueezeDetectorConfig",
                            "DetectorsConfig", "ExecutionConfig"})


def _located(error: Any, show_values: bool = True) -> tuple[str, str]:
    """(the setting's place, the message) of one pydantic error."""
    path, member, inner = "", None, ""
    for item in error["loc"]:
        if member is not None:
            inner += f"[{item}]" if isinstance(item, int) else f".{item}"
        elif isinstance(item, int):
            path += f"[{item}]"
        elif _UNION_MEMBER.match(item) or item in _SECTION_NAMES:
            member = item
        else:
            path += f".{item}" if path else item
    kind, text = error["type"], str(error["msg"])
    if kind == "value_error":  # our own sentence, which names the value
        message = text.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        message = "is not a setting here; remove it or check its spelling"
    elif kind == "missing":
        message = "is required"
    else:
        message = text[:1].lower() + text[1:] + (f" (got {_shown(error.get('input'))})" if show_values else "")
    if inner:
        message += f" (at {inner.lstrip('.')} of {member})"
    return path, message


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
