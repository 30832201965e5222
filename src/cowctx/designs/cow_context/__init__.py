"""The CoW context designs: ``cow_context`` (our corrected design),
``cow_context_poc`` (the PoC's C, transliterated: :mod:`.poc`),
``cow_context_poc[fix,...]`` (the PoC with named fixes, :class:`PocFixes`), and
``cow_context[switch,...]`` (the corrected design with PoC-like behaviours
switched on one at a time, :class:`CowContextOptions`; ablations of our
design, not the C)."""

from __future__ import annotations

from functools import cache

from cowctx.designs.cow_context.fixes import PocFixes
from cowctx.designs.cow_context.options import CowContextOptions
from cowctx.designs.cow_context.poc import CowContextPoc, cow_context_poc_design
from cowctx.designs.cow_context.rmap import CowContextRmap


@cache
def cow_context_design(switches: frozenset[str]) -> type[CowContextRmap]:
    """The corrected design with exactly ``switches`` turned on."""
    unknown = switches - set(CowContextOptions.names())
    if unknown:
        raise KeyError(
            f"unknown cow_context switch(es): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(CowContextOptions.names())} "
            f"(the PoC's own faults are cow_context_poc; its fixes: "
            f"cow_context_poc[{','.join(PocFixes.names())}])"
        )
    if not switches:
        return CowContextRmap
    options = CowContextOptions(**dict.fromkeys(switches, True))
    name = f"cow_context[{','.join(o for o in CowContextOptions.names() if o in switches)}]"
    return type("CowContextSwitchedRmap", (CowContextRmap,), {"name": name, "options": options})


__all__ = [
    "CowContextOptions",
    "CowContextPoc",
    "CowContextRmap",
    "PocFixes",
    "cow_context_design",
    "cow_context_poc_design",
]
