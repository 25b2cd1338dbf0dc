"""Errors caused by the user's input: printed as one line by the CLI, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, dataset, checkpoint): the message says what is wrong and where."""


class CorruptImageError(UserError):
    """An image file that PIL cannot decode."""


def user_message(error: BaseException) -> str:
    """The one-line message of a UserError, also when a DataLoader worker re-raised it.

    Worker processes re-raise as `Caught X in DataLoader worker N. Original Traceback: ...`;
    the user only needs the original message, which is the traceback's last line.
    """
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        _, sep, message = last.partition(": ")
        text = message if sep else last
    return text


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
