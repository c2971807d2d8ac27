"""The one exception type for bad user input.

Raise :class:`UserInputError` with a single line that names what is wrong and how to fix it. The
CLI prints it as one line (set ``LIGHTNING_TRANSFER_TRACEBACK=1`` for the full traceback); library
users can catch it like any ``ValueError``.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: a missing file, a wrong setting, data that cannot be used."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserInputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserInputError(message)
