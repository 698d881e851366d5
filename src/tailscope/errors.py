"""Errors that tailscope raises on bad input.

Every error a user can cause derives from :class:`TailscopeError`; the command line prints
its message as one line and exits non-zero. The subclasses also derive from the built-in
exception a Python user would expect (``ValueError``, ``FileNotFoundError``), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class TailscopeError(Exception):
    """Base class of every error caused by the user's input or environment."""


class DataError(TailscopeError, ValueError):
    """A dataset or array argument is malformed (shape, dtype, NaN, labels out of range)."""


class DatasetNotAvailableError(TailscopeError, FileNotFoundError):
    """A named dataset is not installed on this machine; the message says how to install it."""


class RunStoreError(TailscopeError, OSError):
    """A run directory is missing, corrupt, or not a directory."""


class SpecMismatchError(TailscopeError, ValueError):
    """A run was reopened with a specification that differs from the stored one."""


class RunBusyError(TailscopeError, RuntimeError):
    """Another process is training the run (one trainer at a time)."""
