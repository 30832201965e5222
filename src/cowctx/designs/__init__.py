"""The anonymous rmap designs, by name."""

from __future__ import annotations

from collections.abc import Callable

from cowctx.rmap.protocol import AnonRmap


def design_names() -> list[str]:
    """Every named design: ``anon_vma``, ``cow_context``, ``cow_context_poc``."""
    return sorted(_registry())


def sound_design_names() -> list[str]:
    """The designs whose rmap walks must find every mapping (the PoC is known not to)."""
    return [name for name in design_names() if not name.startswith("cow_context_poc")]


def get_design(name: str) -> type[AnonRmap]:
    """A design by name: ``anon_vma``, ``cow_context``, ``cow_context_poc`` (the
    PoC's C), ``cow_context_poc[fix,...]`` (the PoC with the named fixes, see
    :class:`~cowctx.designs.cow_context.PocFixes`), ``cow_context[switch,...]``
    (the corrected design with only the named PoC-like behaviours, see
    :class:`~cowctx.designs.cow_context.CowContextOptions`), or
    ``anon_vma[revert_NAME,...]`` (kernel fixes taken out, for the explorer)."""
    from cowctx.designs.cow_context import cow_context_design, cow_context_poc_design

    if name.startswith("anon_vma[") and name.endswith("]"):
        return _anon_vma_reverting(name)
    for prefix, build in (
        ("cow_context_poc[", cow_context_poc_design),
        ("cow_context[", cow_context_design),
    ):
        if name.startswith(prefix) and name.endswith("]"):
            parts = frozenset(s.strip() for s in name[len(prefix) : -1].split(",") if s.strip())
            return build(parts)
    registry = _registry()
    if name not in registry:
        raise KeyError(
            f"unknown design {name!r}; known: {', '.join(design_names())}, "
            "cow_context_poc[fix,...], cow_context[switch,...]"
        )
    return registry[name]


def _anon_vma_reverting(name: str) -> type[AnonRmap]:
    """``anon_vma[revert_NAME,...]``: the anon_vma design without the kernel fixes
    named (:data:`cowctx.designs.anon_vma.rmap.REVERTS`), for the explorer's races."""
    from cowctx.designs.anon_vma import AnonVmaRmap
    from cowctx.designs.anon_vma.rmap import REVERTS

    reverts = set()
    for s in (s.strip() for s in name[len("anon_vma[") : -1].split(",")):
        fix = s.removeprefix("revert_")
        if not s.startswith("revert_") or fix not in REVERTS:
            known = ", ".join(f"revert_{k}" for k in REVERTS)
            raise KeyError(f"unknown anon_vma switch {s!r} in {name!r}; known: {known}")
        reverts.add(fix)
    return type(name, (AnonVmaRmap,), {"reverts": frozenset(reverts)})


def known_design(name: str) -> str | None:
    """None when ``name`` names a design, else why not (for error messages)."""
    try:
        get_design(name)
    except (KeyError, ValueError) as exc:
        return str(exc.args[0]) if exc.args else str(exc)
    return None


def object_kind_names() -> list[str]:
    """Every object kind some design (or the machine: ``vm_area_struct``) counts."""
    from cowctx.mm.machine import VM_AREA_STRUCT

    names = {VM_AREA_STRUCT.name}
    for design in _registry().values():
        names.update(kind.name for kind in design.object_kinds)
    return sorted(names)


def make_machine(design: str | Callable[..., AnonRmap] = "anon_vma"):
    """A :class:`~cowctx.mm.machine.Machine` running ``design``."""
    from cowctx.mm.machine import Machine

    factory = get_design(design) if isinstance(design, str) else design
    return Machine(factory)


def _registry() -> dict[str, type[AnonRmap]]:
    from cowctx.designs.anon_vma import AnonVmaRmap
    from cowctx.designs.cow_context import CowContextPoc, CowContextRmap

    return {
        AnonVmaRmap.name: AnonVmaRmap,
        "cow_context": CowContextRmap,
        "cow_context_poc": CowContextPoc,
    }
