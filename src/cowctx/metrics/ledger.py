"""One ledger every design reports to: object allocations and frees, lock
acquisitions (and what they covered while held), and rmap walk costs.

Results, comparisons and plots read from here, so every design is measured in
the same units.  Sizes of objects the kernel does not have yet (CoW context
structures) are estimates and are labelled so wherever they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ObjectKind:
    name: str
    size: int
    """Bytes per object (the slab object size on the reference kernel)."""
    estimate: bool = False
    """True when ``size`` is a modelled estimate rather than a measured kernel size."""


@dataclass
class ObjectStats:
    allocated: int = 0
    freed: int = 0

    @property
    def live(self) -> int:
        return self.allocated - self.freed


@dataclass
class LockStats:
    """Acquisitions of one lock kind in one mode, at one site, during one operation."""

    acquisitions: int = 0
    vmas: int = 0
    objects: int = 0
    max_vmas: int = 0
    max_objects: int = 0


class LockHold:
    """An acquisition in progress; the design counts what it touches under it."""

    __slots__ = ("key", "objects", "vmas")

    def __init__(self, key: tuple[str, str, str, str]) -> None:
        self.key = key
        self.vmas = 0
        self.objects = 0


WALK_UNITS = (
    "anchors",
    "vma_lookups",
    "chain_entries",
    "remap_entries",
    "offsets",
    "pt_probes",
    "hits",
    "misses",
)
"""Walk cost units shared by every design.

``anchors``: anon_vmas or CoW contexts visited; ``vma_lookups``: VMAs
examined (interval-tree hits for anon_vma, VMA-tree lookups for CoW context);
``chain_entries``: anon_vma_chain entries yielded by the interval tree;
``remap_entries``/``offsets``: remap tracking scanned; ``pt_probes``:
page-table checks (``page_vma_mapped_walk``); ``hits``/``misses``: probes
that found / did not find the folio."""


VMSCAN_COUNTERS = (
    "nr_scanned",
    "nr_reclaimed",
    "nr_activate_anon",
    "nr_activate_file",
    "nr_ref_keep",
    "nr_unmap_fail",
)
"""The counters of ``mm_vmscan_reclaim_pages`` (``struct reclaim_stat``) that say what
``shrink_folio_list()`` decided for each folio ``reclaim_pages()`` handed it."""


@dataclass
class WalkRecord:
    client: str
    shared: bool
    """Whether the folio was mapped more than once when the walk started."""
    cost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WALK_UNITS, 0))


class Ledger:
    def __init__(self) -> None:
        self.kinds: dict[str, ObjectKind] = {}
        self.objects: dict[str, ObjectStats] = {}
        self.locks: dict[tuple[str, str, str, str], LockStats] = {}
        self.walks: list[WalkRecord] = []
        self.vmscan: dict[str, int] = dict.fromkeys(VMSCAN_COUNTERS, 0)
        """What reclaim did, as ``mm_vmscan_reclaim_pages`` counts it (summed)."""
        self.op = "setup"
        """The operation in progress (syscall, fault, fork, client...)."""
        self.muted = 0
        """While positive, locks and walks are not recorded (the oracle's own walks)."""

    # --- objects -------------------------------------------------------------------

    def register(self, kind: ObjectKind) -> None:
        self.kinds[kind.name] = kind
        self.objects.setdefault(kind.name, ObjectStats())

    def alloc(self, kind: str, n: int = 1) -> None:
        self.objects[kind].allocated += n

    def free(self, kind: str, n: int = 1) -> None:
        self.objects[kind].freed += n

    def counts(self) -> dict[str, tuple[int, int]]:
        """(allocated, freed) per kind: cheap to snapshot around a step."""
        return {k: (s.allocated, s.freed) for k, s in self.objects.items()}

    def bytes_live(self) -> dict[str, int]:
        return {k: s.live * self.kinds[k].size for k, s in self.objects.items()}

    # --- locks ---------------------------------------------------------------------

    def lock(self, lock: str, mode: str, site: str) -> LockHold:
        """Record an acquisition of ``lock`` (e.g. ``anon_vma.rwsem``) in ``mode``
        (``read``, ``write``, ``spin``, ``rcu``) by kernel function ``site``."""
        return LockHold((lock, mode, self.op, site))

    def unlock(self, hold: LockHold) -> None:
        if self.muted:
            return
        stats = self.locks.get(hold.key)
        if stats is None:
            stats = self.locks[hold.key] = LockStats()
        stats.acquisitions += 1
        stats.vmas += hold.vmas
        stats.objects += hold.objects
        if hold.vmas > stats.max_vmas:
            stats.max_vmas = hold.vmas
        if hold.objects > stats.max_objects:
            stats.max_objects = hold.objects

    # --- walks ---------------------------------------------------------------------

    def walk(self, client: str, shared: bool) -> WalkRecord:
        record = WalkRecord(client, shared)
        if not self.muted:
            self.walks.append(record)
        return record
