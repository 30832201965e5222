"""Slab caches as the explorer sees them: ``SLAB_TYPESAFE_BY_RCU`` reuse with
generation numbers, and freed memory of ordinary caches.

A type-safe cache (the anon_vma cache; VMAs since 6.x) may hand a freed object
out again at once: its memory stays an object of the same type, so a reader
under RCU may see a *different* object there.  The model reuses the most
recently freed object (a slab freelist is LIFO) and bumps its ``gen``; reading
it is legal, acting on it without re-checking its identity is the bug
(:func:`cowctx.concurrency.runtime.use`).  Objects freed from other caches are
remembered so that any later access is a ``uaf``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Slab:
    freelists: dict[str, list[object]] = field(default_factory=dict)
    """Type-safe cache -> its freed objects, most recent last."""
    freed: dict[int, str] = field(default_factory=dict)
    """id() of a freed object of an ordinary cache -> its cache."""
    keep: list[object] = field(default_factory=list)
    """Freed objects stay referenced so their id() is not reused by Python."""

    def alloc(self, cache: str) -> object | None:
        free = self.freelists.get(cache)
        return free.pop() if free else None

    def free(self, cache: str, obj: object, typesafe: bool) -> None:
        if typesafe:
            self.freelists.setdefault(cache, []).append(obj)
        else:
            self.freed[id(obj)] = cache
            self.keep.append(obj)

    def is_freed(self, obj: object) -> str | None:
        return self.freed.get(id(obj))
