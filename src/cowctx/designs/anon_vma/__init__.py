"""The ``anon_vma`` design: Linux 6.18's anonymous reverse map (mm/rmap.c)."""

from cowctx.designs.anon_vma.rmap import AnonVmaRmap
from cowctx.designs.anon_vma.structs import AnonVma, AnonVmaChain, AnonVmaVma

__all__ = ["AnonVma", "AnonVmaChain", "AnonVmaRmap", "AnonVmaVma"]
