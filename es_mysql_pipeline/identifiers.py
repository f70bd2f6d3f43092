"""SQL identifiers from config: validated against a strict pattern, then quoted."""

from __future__ import annotations

import functools
import re

from es_mysql_pipeline.errors import ConfigError

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def validate_identifier(name: str, setting: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, ``_``; at most 64).

    Raises:
        ConfigError: naming ``setting``, for anything else (spaces, quotes, ``;``, dots).
    """
    if not isinstance(name, str) or not _IDENT_RE.match(name):
        raise ConfigError(
            f"{setting}={name!r} is not a valid SQL identifier: use 1-64 letters, digits or "
            "underscores, starting with a letter or underscore"
        )
    return name


@functools.lru_cache(maxsize=4096)
def column_name(raw: str) -> str:
    """Turn a field name from the data into a safe column name (``user.name`` → ``user_name``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if not name or name[0].isdigit():
        name = "_" + name
    return name[:64]
