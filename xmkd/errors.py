"""Exceptions that xmkd raises for bad input; each message names the file or field at fault."""

from __future__ import annotations


class XmkdError(Exception):
    """Base class of every error xmkd raises on purpose (the CLI prints these without a traceback)."""


class XmkdDataError(XmkdError, ValueError):
    """A data file or in-memory record does not have the expected content.

    `source` is the file (or frame id) at fault, `field` the part of it that is wrong.
    """

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.message = message  # without the source and field in front
        self.also: list[XmkdDataError] = []  # other problems found with it (a shared file's, reported once)
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class XmkdConfigError(XmkdError, ValueError):
    """A config file or command-line override is invalid (unknown key, wrong type, bad value)."""


class XmkdNameError(XmkdError, KeyError):
    """A name that is not in one of xmkd's name -> class tables (dataset, label space); the message lists the known
    ones."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""
