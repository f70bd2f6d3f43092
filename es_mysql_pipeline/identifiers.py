"""SQL identifiers: names from config validated against a strict pattern, names from the data
made safe, distinct and the same in every process."""

from __future__ import annotations

import functools
import hashlib
import re

from es_mysql_pipeline.errors import ConfigError

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_]")
#: Characters of a name kept before its hash suffix (``_`` + 8 hex digits → 64 at most).
_KEPT = 55


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


@functools.lru_cache(maxsize=65536)
def column_name(raw: str) -> str:
    """A field name from the data as a column name.

    A plain identifier of at most 64 characters is kept as it is (``user_name``). Any other
    name (``user.name``, ``user-name``, ``é``, 80 characters) is made safe and gets a short
    hash of the original: ``user_name_1f0c9a2b``. So two fields never share a column
    because one was cut or had characters replaced, and the name depends on nothing but
    the field: every run and every process agrees."""
    if _IDENT_RE.match(raw):
        return raw
    name = _UNSAFE_RE.sub("_", raw) or "_"
    if name[0].isdigit():
        name = "_" + name
    return suffixed(name, raw)


def suffixed(name: str, key: str) -> str:
    """``name`` cut to fit, with a hash of ``key`` appended: a distinct, stable name."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{name[:_KEPT]}_{digest}"


def time_column_name(key: str) -> str:
    """The default column of the time field: its own name, a path joined with ``_``, with
    leading marks dropped (``@timestamp`` → ``timestamp``, ``event.created`` →
    ``event_created``)."""
    joined = key.replace(".", "_").lstrip("@") or key
    return column_name(joined)
