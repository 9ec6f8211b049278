"""The one user-facing error type: the CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class CoregError(ValueError):
    """Bad input or state that the user can fix; its message is one line naming the problem."""
