"""The one exception type of problems a user can fix (input, files, environment).

The command line prints a :class:`UserError` as one line and exits with status 1; everything
else is treated as a bug and reported with a hint to rerun with ``--debug``.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input or environment; the message says what to do.

    The command line prints it as one line and exits with status 1.
    """
