"""The user-facing error type and the one-line messages every module may emit.

Kept apart from ``cli`` so that library modules depend on this small module only,
not on the command-line machinery.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


class UnreadableImageError(UserError):
    """A file that is not an image that can be decoded (by Pillow, or by SmartCam's resizer)."""


def first_line(err: BaseException) -> str:
    """An exception's first message line (its type when it has no message): native
    libraries put pages of detail after the line a user needs."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
