"""Regular files and their page cache (``struct file`` + ``address_space``).

Scenario files are shmem (memfd) files on the kernel side: no swap, no
writeback, so their folios stay cached and never get written back or evicted.
"""

from __future__ import annotations

from collections.abc import Callable

from cowctx.mm.folio import Folio


class File:
    """A file with ``pages`` pages of distinct content, or a MAP_SHARED|MAP_ANONYMOUS
    mapping's shmem object (``anon_shared``: zero-filled)."""

    def __init__(
        self, name: str, pages: int, initial: Callable[[int], int], anon_shared: bool = False
    ) -> None:
        self.name = name
        self.pages = pages
        self.i_pages: dict[int, Folio] = {}
        self._initial = initial
        self.anon_shared = anon_shared
        self.f_count = 0
        """Open references: the opener's and one per VMA mapping it (``get_file``)."""
        self.f_mode_write = True
        """FMODE_WRITE: opened for writing (a MAP_SHARED mapping of a read-only
        file loses VM_MAYWRITE and VM_SHARED, as ``do_mmap()`` does)."""

    def initial_content(self, index: int) -> int:
        return self._initial(index)

    def __repr__(self) -> str:
        return f"<file {self.name} pages={self.pages} cached={len(self.i_pages)}>"
