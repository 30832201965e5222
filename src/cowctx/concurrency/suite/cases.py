"""The stabilisation race suite (issue 11, item 2), generated: every rmap walker
against every writer on a few small shapes, each a scenario with ``threads:``.

A pure function of its parameters: the same arguments give the same cases, in
the same order, with the same names.  It knows no design: what a design makes of
a case is for the runner (:mod:`cowctx.concurrency.suite.run`).

A case's name is ``WALKER×WRITER@SHAPE`` (``referenced×munmap-partial@fork3``),
or ``WALKER×WRITER+WRITER@SHAPE`` for the walker racing the writer done twice, by
two processes (or on two folios where one process cannot do it twice).  Scenario
names allow only ``[a-z0-9._-]``, so the scenario is named by :func:`slug`
(``referenced.munmap-partial.fork3``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cowctx.scenario import schema as S

WALKERS: dict[str, str] = {
    "referenced": "folio_referenced()",
    "migrate": "try_to_migrate() + remove_migration_ptes()",
    "reclaim": "try_to_unmap() (shrink_folio_list())",
}
"""Walker name (the scenario op) -> the kernel's walk it runs."""

PAGES = 4
"""Every shape maps one anonymous VMA of this many pages, written before any fork."""


@dataclass(frozen=True)
class Shape:
    """A set-up: ``steps`` build it; ``alive`` are the processes that map the
    VMA at ``base`` afterwards, root first, leaf last."""

    name: str
    description: str
    steps: tuple[dict[str, Any], ...]
    alive: tuple[str, ...]
    base: int

    @property
    def root(self) -> str:
        return self.alive[0]

    @property
    def leaf(self) -> str:
        return self.alive[-1]

    @property
    def second(self) -> str:
        """The other actor of a doubled writer: the process above the leaf."""
        return self.alive[-2]


def _region(base: int = 0) -> list[dict[str, Any]]:
    return [
        {"op": "mmap", "page": base, "pages": PAGES},
        {"op": "write", "page": base, "pages": PAGES},
    ]


SHAPES: tuple[Shape, ...] = (
    Shape(
        "fork2",
        "p0 wrote every page, then forked c1: two levels sharing every folio",
        (*_region(), {"op": "fork", "proc": "p0", "child": "c1"}),
        ("p0", "c1"),
        0,
    ),
    Shape(
        "fork3",
        "p0 wrote every page, forked c1, which forked c2: three levels sharing every folio",
        (
            *_region(),
            {"op": "fork", "proc": "p0", "child": "c1"},
            {"op": "fork", "proc": "c1", "child": "c2"},
        ),
        ("p0", "c1", "c2"),
        0,
    ),
    Shape(
        "remap",
        "p0 wrote every page, moved the VMA with mremap (its pgoff no longer follows its "
        "address), then forked c1",
        (
            *_region(),
            {
                "op": "mremap",
                "page": 0,
                "pages": PAGES,
                "new_pages": PAGES,
                "flags": ["maymove", "fixed"],
                "new_page": 16,
            },
            {"op": "fork", "proc": "p0", "child": "c1"},
        ),
        ("p0", "c1"),
        16,
    ),
    Shape(
        "deadmid",
        "p0 wrote every page, forked c1, which forked c2 and exited: a dead middle context",
        (
            *_region(),
            {"op": "fork", "proc": "p0", "child": "c1"},
            {"op": "fork", "proc": "c1", "child": "c2"},
            {"op": "exit", "proc": "c1"},
        ),
        ("p0", "c2"),
        0,
    ),
)


@dataclass(frozen=True)
class Plan:
    """What one writer does on a shape: extra set-up, each writer thread's steps,
    and the folio the walker walks (looked up at ``walk_page`` in ``walk_proc``)."""

    prep: tuple[dict[str, Any], ...]
    threads: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]
    walk_proc: str
    walk_page: int


@dataclass(frozen=True)
class Writer:
    name: str
    description: str
    plan: Callable[[Shape, tuple[str, ...]], Plan | None]
    """The plan for these actors (one or two processes); None where the shape
    cannot have it."""


def _simple(
    step: Callable[[Shape, str], dict[str, Any]],
    walk_offset: int = 2,
    prep: Callable[[Shape, str], list[dict[str, Any]]] | None = None,
    ends_process: bool = False,
) -> Callable[[Shape, tuple[str, ...]], Plan | None]:
    """Each actor does ``step`` in its own thread; the walker walks the root's
    folio at ``base + walk_offset``.  A step that ends its process
    (``ends_process``) is not given to the root: the walker finds its folio
    through the root, which must stay alive."""

    def plan(shape: Shape, actors: tuple[str, ...]) -> Plan | None:
        if ends_process and shape.root in actors:
            return None
        pre = [s for a in actors for s in (prep(shape, a) if prep else [])]
        threads = tuple((f"w{i + 1}", (step(shape, a),)) for i, a in enumerate(actors))
        return Plan(tuple(pre), threads, shape.root, shape.base + walk_offset)

    return plan


def _fork(shape: Shape, actors: tuple[str, ...]) -> Plan:
    threads = tuple(
        (f"w{i + 1}", ({"op": "fork", "proc": a, "child": f"n{i + 1}"},))
        for i, a in enumerate(actors)
    )
    return Plan((), threads, shape.root, shape.base + 2)


def _reuse(shape: Shape, actors: tuple[str, ...]) -> Plan:
    """Actor i is left the only mapper of the folio at ``base + 2 + i`` (every
    other process writes its own copy first), write-protected since the fork:
    its write fault reuses the folio (wp_page_reuse(), folio_move_anon_rmap();
    the CoW context moves it to the lowest context)."""
    prep = [
        {"op": "write", "proc": other, "page": shape.base + 2 + i}
        for i, actor in enumerate(actors)
        for other in shape.alive
        if other != actor
    ]
    threads = tuple(
        (f"w{i + 1}", ({"op": "write", "proc": a, "page": shape.base + 2 + i},))
        for i, a in enumerate(actors)
    )
    return Plan(tuple(prep), threads, actors[0], shape.base + 2)


def _swapin(shape: Shape, actors: tuple[str, ...]) -> Plan | None:
    """The folio at ``base + 2`` is swapped out of every process, then read back
    by the root (a swap-cache folio): each actor's read maps that folio too."""
    if shape.root in actors:
        return None
    page = shape.base + 2
    prep = (
        {"op": "reclaim", "proc": shape.root, "page": page},
        {"op": "read", "proc": shape.root, "page": page},
    )
    threads = tuple(
        (f"w{i + 1}", ({"op": "read", "proc": a, "page": page},)) for i, a in enumerate(actors)
    )
    return Plan(prep, threads, shape.root, page)


def _ksm(shape: Shape, actors: tuple[str, ...]) -> Plan | None:
    """Every process's VMA is made mergeable and two pages get equal content (the
    actor's copy at ``base + 2``, the root's at ``base + 3``); the writer is one
    KSM scan, which merges them.  There is one ksmd: no doubled variant."""
    if len(actors) != 1:
        return None
    (actor,) = actors
    prep: list[dict[str, Any]] = [
        {"op": "madvise", "proc": p, "page": shape.base, "pages": PAGES, "advice": "mergeable"}
        for p in shape.alive
    ]
    prep += [
        {"op": "write", "proc": actor, "page": shape.base + 2, "value": 7},
        {"op": "write", "proc": shape.root, "page": shape.base + 3, "value": 7},
    ]
    return Plan(tuple(prep), (("w1", ({"op": "ksm", "proc": actor},)),), actor, shape.base + 2)


def _op(op: str, **fields: Any) -> Callable[[Shape, str], dict[str, Any]]:
    """A step at page offsets relative to the shape's base (``page``/``new_page``)."""

    def step(shape: Shape, actor: str) -> dict[str, Any]:
        out: dict[str, Any] = {"op": op, "proc": actor, **fields}
        for key in ("page", "new_page"):
            if key in out:
                out[key] += shape.base
        return out

    return step


def _move(page: int, pages: int, to: int) -> Callable[[Shape, str], dict[str, Any]]:
    """mremap(MREMAP_MAYMOVE | MREMAP_FIXED) of ``pages`` at ``base + page`` to ``to``."""

    def step(shape: Shape, actor: str) -> dict[str, Any]:
        return {
            "op": "mremap",
            "proc": actor,
            "page": shape.base + page,
            "pages": pages,
            "new_pages": pages,
            "flags": ["maymove", "fixed"],
            "new_page": to,
        }

    return step


WRITERS: tuple[Writer, ...] = (
    Writer("fork", "the process forks (dup_mmap(): anon_vma_fork() / the child context)", _fork),
    Writer(
        "exit",
        "the process exits (exit_mmap(): unlink_anon_vmas() / put context)",
        _simple(lambda shape, a: {"op": "exit", "proc": a}, ends_process=True),
    ),
    Writer("munmap-whole", "munmap of the whole VMA", _simple(_op("munmap", page=0, pages=PAGES))),
    Writer(
        "munmap-partial",
        "munmap of the VMA's first half: the rest's vm_start and vm_pgoff change",
        _simple(_op("munmap", page=0, pages=2)),
    ),
    Writer(
        "mremap-move",
        "mremap moves the VMA's second half to a free place (split, a new VMA, move_ptes())",
        _simple(_move(2, 2, 40)),
    ),
    Writer(
        "mremap-move-merge",
        "mremap moves the VMA's second half next to its page 1, moved before: the "
        "destination merges with a VMA of lower pgoff, which the rmap walk visits first "
        "(copy_vma()'s need_rmap_locks)",
        _simple(_move(2, 2, 40), prep=lambda shape, a: [_move(1, 1, 39)(shape, a)]),
    ),
    Writer(
        "mremap-grow",
        "mremap grows the VMA in place",
        _simple(_op("mremap", page=0, pages=PAGES, new_pages=2 * PAGES)),
    ),
    Writer(
        "mremap-shrink",
        "mremap shrinks the VMA to its first half (the rest unmapped)",
        _simple(_op("mremap", page=0, pages=PAGES, new_pages=2), walk_offset=1),
    ),
    Writer(
        "mprotect-split",
        "mprotect of one middle page: the VMA splits in three",
        _simple(_op("mprotect", page=1, pages=1, prot="r")),
    ),
    Writer(
        "mprotect-merge",
        "mprotect back of a page split off by an earlier mprotect: the three VMAs merge",
        _simple(
            _op("mprotect", page=1, pages=1, prot="rw"),
            prep=lambda shape, a: [_op("mprotect", page=1, pages=1, prot="r")(shape, a)],
        ),
    ),
    Writer(
        "cow",
        "a write fault on a shared folio: wp_page_copy() unmaps it here, maps a copy",
        _simple(_op("write", page=2)),
    ),
    Writer(
        "reuse",
        "a write fault on an exclusive, write-protected folio: reused and moved to the "
        "faulting VMA's anon_vma, or to the lowest CoW context",
        _reuse,
    ),
    Writer("swapin", "a read fault maps a swap-cache folio (do_swap_page())", _swapin),
    Writer("ksm", "a KSM scan merges the walked folio's page with an equal one", _ksm),
)


@dataclass(frozen=True)
class Case:
    name: str
    walker: str
    writers: tuple[str, ...]
    shape: str
    scenario: S.Scenario


def slug(name: str) -> str:
    """The scenario name of a case: ``×``, ``+`` and ``@`` become dots."""
    return name.replace("×", ".").replace("+", ".").replace("@", ".")


def case_name(walker: str, writers: Iterable[str], shape: str) -> str:
    return f"{walker}×{'+'.join(writers)}@{shape}"


def _case(walker: str, writer: Writer, shape: Shape, double: bool) -> Case | None:
    actors = (shape.leaf, shape.second) if double else (shape.leaf,)
    plan = writer.plan(shape, actors)
    if plan is None:
        return None
    writers = (writer.name,) * len(actors)
    name = case_name(walker, writers, shape.name)
    walk = {"op": walker, "proc": plan.walk_proc, "page": plan.walk_page}
    doc = {
        "format": S.FORMAT,
        "name": slug(name),
        "description": (
            f"{name}: {WALKERS[walker]} on the folio at page {plan.walk_page} of "
            f"{plan.walk_proc}, racing {writer.description}"
            + (f" ({' and '.join(actors)} both)" if double else f" ({actors[0]})")
            + f"; shape {shape.name}: {shape.description}."
        ),
        "steps": [*shape.steps, *plan.prep],
        "threads": {"walker": [walk], **{t: list(steps) for t, steps in plan.threads}},
    }
    return Case(name, walker, writers, shape.name, S.Scenario.model_validate(doc))


def stabilisation_suite(
    walkers: Iterable[str] = tuple(WALKERS),
    writers: Iterable[str] | None = None,
    shapes: Iterable[str] | None = None,
    double: bool = True,
) -> list[Case]:
    """Every walker × writer × shape, in that nesting order, each also (with
    ``double``) with the writer done twice where the shape allows it."""
    by_writer = {w.name: w for w in WRITERS}
    by_shape = {s.name: s for s in SHAPES}
    chosen_writers = [by_writer[w] for w in (writers if writers is not None else by_writer)]
    chosen_shapes = [by_shape[s] for s in (shapes if shapes is not None else by_shape)]
    out = []
    for walker in walkers:
        if walker not in WALKERS:
            raise KeyError(f"unknown walker {walker!r} (known: {', '.join(WALKERS)})")
        for writer in chosen_writers:
            for shape in chosen_shapes:
                for twice in (False, True) if double else (False,):
                    case = _case(walker, writer, shape, twice)
                    if case is not None:
                        out.append(case)
    return out


SUITES: dict[str, Callable[[], list[Case]]] = {"stabilisation": stabilisation_suite}
"""``cowctx explore --suite NAME``."""
