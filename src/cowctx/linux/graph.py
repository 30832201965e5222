"""The live anon_vma graph of the scenario processes, read from the running kernel.

Per window VMA: its ``anon_vma`` and its ``anon_vma_chain`` (oldest first, as the model lists
it: the kernel's ``list_add()`` puts the newest AVC at the head); per anon_vma: ``root``,
``parent``, ``refcount``, ``num_children``, ``num_active_vmas``; per mapped anon page: the
folio's ``mapping`` (its anon_vma) and ``index``, and the page's ``PG_anon_exclusive``.
Kernel memory is read with the BPF peek program (bpf.py), every offset from BTF.

Folios are found through the vmemmap (``struct page`` array at ``VMEMMAP_START``, not
randomised on this machine kind: no ``vmemmap_base`` in kallsyms).  That assumption is checked
on every read: each anon folio's ``mapping`` must be one of the anon_vmas found in the chains
(the rmap invariant), else the read fails with GraphError rather than report garbage.

Objects are named canonically (designs/anon_vma/graph.py, ``anon_vma_name``) from the step
that allocated them, which the tracefs ledger records by pointer, so graphs compare across runs
and with the model.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cowctx.linux import pagemap
from cowctx.linux.bpf import PEEK_BYTES, BpfError, KernelPeek
from cowctx.linux.btf import Btf, BtfError, vmlinux_btf
from cowctx.scenario.schema import WINDOW_BASE

PAGE_SIZE = 4096
VMEMMAP_START = 0xFFFFEA0000000000
"""x86-64 4-level paging, no memory KASLR (CONFIG_RANDOMIZE_MEMORY unset here)."""
FOLIO_MAPPING_ANON, FOLIO_MAPPING_KSM = 0x1, 0x2
FOLIO_MAPPING_FLAGS = 0x3
MAX_CHAIN = 100_000


class GraphError(RuntimeError):
    """The graph cannot be read, or what was read breaks an assumption (the vmemmap)."""


@dataclass(frozen=True, slots=True)
class GraphLayout:
    """Offsets of every field read, from BTF."""

    vma_start: int
    vma_end: int
    vma_chain: int
    vma_anon_vma: int
    vma_pgoff: int
    avc_vma: int
    avc_anon_vma: int
    avc_same_vma: int
    av_root: int
    av_refcount: int
    av_num_children: int
    av_num_active_vmas: int
    av_parent: int
    folio_mapping: int
    folio_index: int
    sizeof_page: int
    page_flags: int
    pg_anon_exclusive: int

    @classmethod
    def from_btf(cls, btf: Btf) -> GraphLayout:
        o = btf.offsetof
        lay = cls(
            vma_start=o("vm_area_struct", "vm_start"),
            vma_end=o("vm_area_struct", "vm_end"),
            vma_chain=o("vm_area_struct", "anon_vma_chain"),
            vma_anon_vma=o("vm_area_struct", "anon_vma"),
            vma_pgoff=o("vm_area_struct", "vm_pgoff"),
            avc_vma=o("anon_vma_chain", "vma"),
            avc_anon_vma=o("anon_vma_chain", "anon_vma"),
            avc_same_vma=o("anon_vma_chain", "same_vma") + o("list_head", "next"),
            av_root=o("anon_vma", "root"),
            av_refcount=o("anon_vma", "refcount"),
            av_num_children=o("anon_vma", "num_children"),
            av_num_active_vmas=o("anon_vma", "num_active_vmas"),
            av_parent=o("anon_vma", "parent"),
            folio_mapping=o("folio", "mapping"),
            folio_index=o("folio", "index"),
            sizeof_page=btf.sizeof("page"),
            page_flags=o("page", "flags"),
            pg_anon_exclusive=btf.enum_value("pageflags", "PG_anon_exclusive"),
        )
        for name in ("avc_vma", "avc_anon_vma", "avc_same_vma", "av_root", "av_refcount"):
            if getattr(lay, name) + 8 > PEEK_BYTES:
                raise GraphError(f"{name} at offset {getattr(lay, name)} is beyond one peek")
        for name in ("av_num_children", "av_num_active_vmas", "av_parent", "folio_index"):
            if getattr(lay, name) + 8 > PEEK_BYTES:
                raise GraphError(f"{name} at offset {getattr(lay, name)} is beyond one peek")
        return lay

    @property
    def vma_bytes(self) -> int:
        last = max(self.vma_start, self.vma_end, self.vma_chain, self.vma_anon_vma, self.vma_pgoff)
        return (last + 8 + 7) // 8 * 8


def _u64(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", data, off)[0])


def _u32(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", data, off)[0])


def graph_unavailable_reason() -> str | None:
    """None when the graph can be read here, else why not."""
    try:
        with KernelGraphReader():
            return None
    except (BtfError, BpfError, GraphError, OSError) as exc:
        return str(exc)


class KernelGraphReader:
    """Loads the peek program once; ``read()`` returns one graph."""

    def __init__(self, btf: Btf | None = None) -> None:
        btf = btf or vmlinux_btf()
        self.lay = GraphLayout.from_btf(btf)
        self.peek = KernelPeek(self.lay.vma_bytes, btf)

    def close(self) -> None:
        self.peek.close()

    def __enter__(self) -> KernelGraphReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(
        self, procs: Sequence[tuple[str, int]], name_of: Callable[[int], str | None]
    ) -> dict[str, Any]:
        """The graph of ``procs`` ((name, pid) in creation order, all quiescent) as
        ``{"anon_vmas": {name: fields}, "vmas": {proc: [...]}, "folios": {proc: [...]}}``;
        ``name_of(ptr)`` is an anon_vma's canonical name (None: not a scenario object)."""
        lay = self.lay
        graph: dict[str, Any] = {"anon_vmas": {}, "vmas": {}, "folios": {}}
        if not procs:
            return graph
        try:
            self.peek.keep_links({pid for _, pid in procs})
            tid = procs[0][1]
            vmas: list[tuple[str, int, int, int, int, int]] = []
            for proc, pid in procs:
                for ptr, data in self.peek.vmas(pid):
                    start, end = _u64(data, lay.vma_start), _u64(data, lay.vma_end)
                    lo, hi = max(start, WINDOW_BASE), min(end, pagemap.WINDOW_END)
                    if lo >= hi:
                        continue
                    vmas.append(
                        (proc, ptr, lo, hi, _u64(data, lay.vma_anon_vma), _u64(data, lay.vma_chain))
                    )
            chains = self._chains(tid, [(v[1], v[5]) for v in vmas])
            av_ptrs: set[int] = set()
            for ch in chains:
                av_ptrs.update(ch)
            in_chains = set(av_ptrs)
            avs = self._anon_vmas(tid, av_ptrs)
            folios = self._folios(tid, procs, in_chains)
        except BpfError as exc:
            raise GraphError(f"reading the anon_vma graph: {exc}") from exc
        names: dict[int, str] = {}

        def nm(ptr: int) -> str:
            if ptr not in names:
                names[ptr] = name_of(ptr) or f"AV(untraced {len(names)})"
            return names[ptr]

        for ptr in sorted(avs, key=lambda p: nm(p)):
            f = avs[ptr]
            graph["anon_vmas"][nm(ptr)] = {
                "root": nm(f["root"]),
                "parent": nm(f["parent"]),
                "refcount": f["refcount"],
                "num_children": f["num_children"],
                "num_active_vmas": f["num_active_vmas"],
            }
        for (proc, _ptr, lo, hi, anon_vma, _), chain in zip(vmas, chains, strict=True):
            graph["vmas"].setdefault(proc, []).append(
                {
                    "start": (lo - WINDOW_BASE) // PAGE_SIZE,
                    "end": (hi - WINDOW_BASE) // PAGE_SIZE,
                    "anon_vma": nm(anon_vma) if anon_vma else None,
                    "chain": [nm(a) for a in chain],
                }
            )
        for proc, rows in folios.items():
            graph["folios"][proc] = [
                {"page": page, "anon_vma": nm(av), "index": index, "exclusive": exclusive}
                for page, av, index, exclusive in rows
            ]
        for proc, _ in procs:
            graph["vmas"].setdefault(proc, [])
            graph["folios"].setdefault(proc, [])
        return graph

    def _chains(self, tid: int, heads: list[tuple[int, int]]) -> list[list[int]]:
        """Each VMA's AVC list walked from the head (newest first), returned oldest first."""
        lay = self.lay
        chains: list[list[int]] = [[] for _ in heads]
        cur = {i: first for i, (_, first) in enumerate(heads)}
        steps = 0
        while True:
            pending = {i: p for i, p in cur.items() if p != heads[i][0] + lay.vma_chain}
            if not pending:
                break
            steps += 1
            if steps > MAX_CHAIN:
                raise GraphError("an anon_vma_chain list does not end: corrupt read")
            order = sorted(pending)
            data = self.peek.peek(tid, [pending[i] - lay.avc_same_vma for i in order])
            for i, d in zip(order, data, strict=True):
                if d is None:
                    raise GraphError(f"cannot read an anon_vma_chain at {pending[i]:#x}")
                if _u64(d, lay.avc_vma) != heads[i][0]:
                    raise GraphError(
                        f"anon_vma_chain at {pending[i] - lay.avc_same_vma:#x} belongs to VMA "
                        f"{_u64(d, lay.avc_vma):#x}, not {heads[i][0]:#x}: offsets wrong?"
                    )
                chains[i].append(_u64(d, lay.avc_anon_vma))
                cur[i] = _u64(d, lay.avc_same_vma)
        return [list(reversed(c)) for c in chains]

    def _anon_vmas(self, tid: int, ptrs: set[int]) -> dict[int, dict[str, int]]:
        """Fields of every anon_vma in ``ptrs`` and of their roots and parents."""
        lay = self.lay
        out: dict[int, dict[str, int]] = {}
        todo = sorted(ptrs)
        while todo:
            data = self.peek.peek(tid, todo)
            for ptr, d in zip(todo, data, strict=True):
                if d is None:
                    raise GraphError(f"cannot read anon_vma at {ptr:#x}")
                out[ptr] = {
                    "root": _u64(d, lay.av_root),
                    "parent": _u64(d, lay.av_parent),
                    "refcount": _u32(d, lay.av_refcount),
                    "num_children": _u64(d, lay.av_num_children),
                    "num_active_vmas": _u64(d, lay.av_num_active_vmas),
                }
            todo = sorted(
                {p for f in out.values() for p in (f["root"], f["parent"]) if p} - set(out)
            )
        return out

    def _folios(
        self, tid: int, procs: Sequence[tuple[str, int]], in_chains: set[int]
    ) -> dict[str, list[tuple[int, int, int, bool]]]:
        """(page, anon_vma, index, PageAnonExclusive) of every present anon page, via the
        vmemmap."""
        lay = self.lay
        wanted: list[tuple[str, pagemap.PageInfo]] = []
        with pagemap.PhysReader() as phys:
            for proc, pid in procs:
                lines = pagemap.read_window_maps(pid)
                for p in pagemap.read_window_pages(pid, lines, phys):
                    if p.anon and not p.zero_page and not p.ksm:
                        wanted.append((proc, p))
        heads = sorted({p.head_pfn for _, p in wanted})
        pfns = sorted({p.pfn for _, p in wanted} | set(heads))
        data = self.peek.peek(tid, [VMEMMAP_START + pfn * lay.sizeof_page for pfn in pfns])
        raw = dict(zip(pfns, data, strict=True))
        by_pfn: dict[int, tuple[int, int]] = {}
        for pfn in heads:
            d = raw[pfn]
            if d is None:
                raise GraphError(
                    f"cannot read struct page of pfn {pfn:#x} at vmemmap {VMEMMAP_START:#x}: "
                    "is the vmemmap elsewhere on this kernel (memory KASLR)?"
                )
            mapping = _u64(d, lay.folio_mapping)
            if mapping & FOLIO_MAPPING_FLAGS != FOLIO_MAPPING_ANON:
                raise GraphError(
                    f"pfn {pfn:#x} is anon in /proc/kpageflags but its folio->mapping "
                    f"{mapping:#x} read through the vmemmap at {VMEMMAP_START:#x} is not an "
                    "anon_vma: the vmemmap assumption does not hold on this kernel"
                )
            av = mapping & ~FOLIO_MAPPING_FLAGS
            if av not in in_chains:
                raise GraphError(
                    f"pfn {pfn:#x}: folio->mapping {av:#x} is no anon_vma of any scenario "
                    f"VMA's chain: the vmemmap assumption ({VMEMMAP_START:#x}) does not hold"
                )
            by_pfn[pfn] = (av, _u64(d, lay.folio_index))
        out: dict[str, list[tuple[int, int, int, bool]]] = {}
        for proc, p in wanted:
            av, index = by_pfn[p.head_pfn]
            page_raw = raw[p.pfn]
            assert page_raw is not None  # the head's read succeeded: it is in the vmemmap
            flags = _u64(page_raw, lay.page_flags)
            exclusive = bool(flags >> lay.pg_anon_exclusive & 1)
            out.setdefault(proc, []).append((p.page, av, index, exclusive))
        return out
