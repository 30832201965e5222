"""Page contents, abstracted to ints so that KSM can compare pages.

A page filled with one byte value ``v`` is ``v`` (the zero page is 0).  Pages
whose data no other page can equal (a default write, which stamps the page
with a unique value, or a file page with its own pattern) get a unique value
above 255.
"""

from __future__ import annotations

ZERO_CONTENT = 0
_UNIQUE_BASE = 0x100


class ContentSource:
    """Hands out unique page contents, deterministically."""

    def __init__(self) -> None:
        self._next = _UNIQUE_BASE

    def unique(self) -> int:
        value = self._next
        self._next += 1
        return value

    def unique_block(self, n: int) -> int:
        """Reserve ``n`` consecutive unique contents; returns the first."""
        first = self._next
        self._next += n
        return first


def is_byte_fill(content: int) -> bool:
    return 0 <= content < _UNIQUE_BASE
