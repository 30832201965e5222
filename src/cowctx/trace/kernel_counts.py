"""The kernel's anon_vma / anon_vma_chain counts in a recording, per replay segment.

Classification as src/cowctx/linux/tracefs.py does it: an allocation counts when its
call site is an rmap function (the anon_vma_chain cache is merged with fs_cache and
eventpoll_pwq) and it ran in a task of the tree; a free counts when its pointer is a
live object of the tree, whichever task ran it.  Allocations of the first task before
its first execve are the recorder's own process, not the program's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cowctx.linux.tracefs import KINDS, RMAP_SITES

DELTA_KEYS = tuple(f"{k}.{w}" for k in KINDS for w in ("allocated", "freed"))


@dataclass
class KernelCounts:
    live: dict[int, str] = field(default_factory=dict)
    allocated: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)
    """Events left out, by reason and call site."""

    def account(self, alloc: bool, kind: str, func: str, ptr: int, ours: bool) -> str | None:
        """Fold one kmem record in; returns the delta key it counted under, or None."""
        if alloc:
            if not ours:
                self.other[f"alloc:{func}:before-exec-or-foreign"] += 1
                return None
            if func not in RMAP_SITES:
                self.other[f"alloc:{func}:foreign-site"] += 1
                return None
            if ptr in self.live:
                self.other[f"alloc:{func}:live-pointer-reused"] += 1
            self.live[ptr] = kind
            self.allocated[kind] += 1
            return f"{kind}.allocated"
        owned = self.live.pop(ptr, None)
        if owned is None:
            self.other[f"free:{func}:foreign-object"] += 1
            return None
        self.freed[owned] += 1
        return f"{owned}.freed"

    def totals(self) -> dict[str, dict[str, int]]:
        live = Counter(self.live.values())
        return {
            k: {"allocated": self.allocated[k], "freed": self.freed[k], "live": live[k]}
            for k in KINDS
        }
