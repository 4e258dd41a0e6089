"""Errors meant for the user, and how they are told: the one list that the command line and the app share."""

from __future__ import annotations

# Errors with a message for the user, told as one line without a traceback: bad values and files (ValueError; our
# loaders turn damaged files into it, naming them), missing or existing paths, unreadable or unwritable files
# (OSError: permissions, read-only or full disks), no network, missing optional packages. TypeError, KeyError and
# the rest are bugs and keep their traceback.
USER_ERRORS = (ValueError, OSError, ImportError)


def user_message(error: Exception) -> str:
    """One line for the user: an OSError as "what: file" (`[Errno 28] No space left on device: 'x'` ->
    "No space left on device: x"), anything else its text with line breaks folded."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(str(error).split()) or type(error).__name__


__all__ = ["USER_ERRORS", "user_message"]
