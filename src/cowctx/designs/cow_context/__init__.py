"""The CoW context designs: ``cow_context`` (corrected), ``cow_context_poc``
(the PoC's behaviour), and ``cow_context[switch,...]`` for one PoC fault at a time."""

from __future__ import annotations

from functools import cache

from cowctx.designs.cow_context.options import CowContextOptions
from cowctx.designs.cow_context.rmap import CowContextRmap


@cache
def cow_context_design(switches: frozenset[str]) -> type[CowContextRmap]:
    """A design class with exactly ``switches`` of the PoC's behaviour turned on."""
    unknown = switches - set(CowContextOptions.names())
    if unknown:
        raise KeyError(
            f"unknown cow_context switch(es): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(CowContextOptions.names())}"
        )
    options = CowContextOptions(**dict.fromkeys(switches, True))
    if not switches:
        return CowContextRmap
    if options == CowContextOptions.all_on():
        name = "cow_context_poc"
    else:
        name = f"cow_context[{','.join(o for o in CowContextOptions.names() if o in switches)}]"
    return type("CowContextPocRmap", (CowContextRmap,), {"name": name, "options": options})


__all__ = ["CowContextOptions", "CowContextRmap", "cow_context_design"]
