"""Errors caused by the user's input: printed as one line by the CLI, never as a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


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


def report_user_errors(command: Callable[[], int]) -> int:
    """Run a CLI command: a UserError becomes one `error: ...` line on stderr and exit status 2."""
    try:
        return command()
    except UserError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        # DataLoader workers re-raise our errors as RuntimeError when they cannot rebuild them.
        if "CorruptImageError" in str(e) or "UserError" in str(e):
            print(f"error: {user_message(e)}", file=sys.stderr)
            return 2
        raise
