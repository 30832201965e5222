"""The anonymous rmap designs, by name."""

from __future__ import annotations

from collections.abc import Callable

from cowctx.rmap.protocol import AnonRmap


def design_names() -> list[str]:
    return sorted(_registry())


def get_design(name: str) -> type[AnonRmap]:
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown design {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def make_machine(design: str | Callable[..., AnonRmap] = "anon_vma"):  # type: ignore[no-untyped-def]
    """A :class:`~cowctx.mm.machine.Machine` running ``design``."""
    from cowctx.mm.machine import Machine

    factory = get_design(design) if isinstance(design, str) else design
    return Machine(factory)


def _registry() -> dict[str, type[AnonRmap]]:
    from cowctx.designs.anon_vma import AnonVmaRmap

    return {AnonVmaRmap.name: AnonVmaRmap}
