"""What the CLI prints when a command fails: one line saying what went wrong and what to do.

The ``kecl`` group runs every command through :class:`FriendlyGroup`; the whole traceback is
printed only with ``kecl --debug …``.
"""

from __future__ import annotations

import errno
import logging
import sys
from typing import Any

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from typer.core import TyperGroup

log = logging.getLogger("kecl.cli")

DEBUG_KEY = "kecl_debug"
"""``ctx.meta`` key the root callback sets for ``--debug``."""


def _database(exc: DBAPIError) -> str:
    text = str(exc.orig or exc).lower()
    if "readonly" in text or "read-only" in text or "read only" in text:
        return (
            "the database is read-only: make the database file and its folder writable by this user "
            "(or point KECL_DATABASE_URL at a writable database)"
        )
    if "disk" in text and ("full" in text or "space" in text or "i/o" in text):
        return (
            "the database could not write to its disk (full, or over a file-size limit): free space there, "
            "then run the command again; what was written before stays intact"
        )
    if "unable to open" in text or "connection" in text or "could not connect" in text or "refused" in text:
        return f"cannot reach the database ({text.splitlines()[0]}): start it or fix KECL_DATABASE_URL"
    return f"database error: {text.splitlines()[0]} (run with --debug for the traceback)"


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EFBIG:
        return f"no space left to write{where}: free disk space (or raise the file size limit), then run again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where} ({exc.strerror}): make KECL_HOME writable by this user"
    return f"{exc.strerror or exc}{where} (run with --debug for the traceback)"


def _raised_by(exc: BaseException, module: str, name: str) -> bool:
    """Whether ``exc`` is ``module.name``, without importing ``module`` (the CLI starts without
    torch and faiss; an exception of a package that was never imported cannot be one of its)."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def describe_failure(exc: BaseException) -> str:
    """One line for the user: what failed and what to do about it."""
    if _raised_by(exc, "encoder", "CheckpointError"):
        version, parent = getattr(exc, "version", None), getattr(exc, "parent", None)
        if version is None:
            return f"{exc}"
        fix = (
            f"activate its parent with `kecl models activate {parent}`"
            if parent
            else "train a new one with `kecl train` or delete the checkpoints folder to start from the default"
        )
        return f"the active checkpoint {version} is damaged ({exc}); {fix}"
    if _raised_by(exc, "updater", "CycleBusy"):
        return f"{exc}; wait for it (`kecl update --wait`) or run again later"
    if _raised_by(exc, "retrieval", "IndexLoadError"):
        return f"{exc}; rebuild it with `kecl index build`"
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        return f"invalid settings: {problems} (fix kecl.toml or the KECL_* variable)"
    if isinstance(exc, OperationalError | DBAPIError):
        return _database(exc)
    if isinstance(exc, OSError):
        return _os_error(exc)
    return f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"


# Usage errors' base class: typer's own since it vendors click, click's ClickException before.
_USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    c
    for c in typer.BadParameter.__mro__
    if issubclass(c, Exception) and c.__name__ in ("TyperException", "ClickException")
)
# usage errors and deliberate exits are already one line
_PASS_THROUGH: tuple[type[BaseException], ...] = (*_USAGE_ERRORS, typer.Exit, typer.Abort, KeyboardInterrupt)


class FriendlyGroup(TyperGroup):
    """The root command group: an exception a command lets through becomes one line on stderr and
    exit code 1 (``--debug``: the traceback, as Python prints it)."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors click: its Context class is private
        """Run the command; translate what it raises unless ``--debug``."""
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if ctx.meta.get(DEBUG_KEY):
                raise
            log.debug("command failed", exc_info=True)
            typer.echo(f"error: {describe_failure(exc)}", err=True)
            raise typer.Exit(1) from None
