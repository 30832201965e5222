"""Deterministic random scenarios that go where rmap bugs live.

Uniformly random syscalls mostly fail with EINVAL or land in empty space.  The
generator keeps a page-level shadow of what each live process has mapped (which
mmap made a page, its prot, file and file page), so most ranges start or end
inside, at the edges of or across VMAs and holes, mappings are placed next to
each other (so they merge), mremap moves things next to their origin and back,
and accesses touch mapped pages.  The shadow is an approximation (it does not
know the model's merge decisions or errnos); it only steers the choices, the
model decides what happens.  Everything stays in pages 0..REGION-1 of the window.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from cowctx.scenario.loader import parse_scenario
from cowctx.scenario.schema import FORMAT, Advice, Scenario

REGION = 256
"""Pages of the scenario window the generator uses: small, so VMAs meet and merge."""
MAX_LEN = 48
"""Longest range the generator asks for, in pages."""
FILES: dict[str, int] = {"f0": 16, "f1": 48}
"""The files every generated scenario declares (name -> pages)."""
SMALL_VALUES = (0, 1, 2)
"""Byte values written now and then, so KSM finds identical pages."""

ADVICES: tuple[str, ...] = get_args(Advice)
"""Every advice the format admits, in its order."""
PROTS = ("rw", "r", "none", "rx", "rwx")
PROT_WEIGHTS = (60, 12, 8, 10, 10)

KERNEL_OPS: dict[str, int] = {
    "mmap": 12,
    "munmap": 5,
    "mprotect": 8,
    "mremap": 11,
    "madvise": 8,
    "read": 8,
    "write": 18,
    "fork": 6,
    "exit": 3,
    "exec": 1,
}
MODEL_OPS: dict[str, int] = {"ksm": 2, "migrate": 3, "reclaim": 3, "referenced": 2}
INVALID_RATE = 0.04
"""Fraction of steps with arguments the schema admits but the syscall refuses."""


@dataclass(frozen=True)
class _Page:
    """What the shadow knows about one mapped page."""

    origin: int
    """Which generated mmap made it: pages of one origin are likely one VMA."""
    prot: str
    file: str | None
    file_page: int
    shared: bool


@dataclass
class _Proc:
    name: str
    pages: dict[int, _Page] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    """Pages that probably map an anon folio (written, private, writable)."""
    dontfork: set[int] = field(default_factory=set)
    wipeonfork: set[int] = field(default_factory=set)
    moved: list[tuple[int, int, int]] = field(default_factory=list)
    """(new_page, pages, origin_page) of earlier fixed moves, to move them back."""

    def forget(self, start: int, n: int) -> None:
        for page in range(start, start + n):
            self.pages.pop(page, None)
            self.touched.discard(page)
            self.dontfork.discard(page)
            self.wipeonfork.discard(page)

    def segments(self) -> list[tuple[int, int]]:
        """Runs of pages that are probably one VMA: [start, end)."""
        out: list[tuple[int, int]] = []
        prev: _Page | None = None
        for page in sorted(self.pages):
            cur = self.pages[page]
            if (
                out
                and out[-1][1] == page
                and prev is not None
                and prev.origin == cur.origin
                and prev.prot == cur.prot
            ):
                out[-1] = (out[-1][0], page + 1)
            else:
                out.append((page, page + 1))
            prev = cur
        return out

    def free_run(self, start: int, limit: int = MAX_LEN) -> int:
        """Unmapped pages from ``start`` (within the region), at most ``limit``."""
        n = 0
        while n < limit and start + n < REGION and start + n not in self.pages:
            n += 1
        return n


class _Generator:
    """The shadow of every live process and the choices made from it."""

    def __init__(
        self,
        rng: random.Random,
        max_procs: int,
        kernel_only: bool,
        invalid: bool,
        skip_ops: Collection[str],
    ) -> None:
        self.rng = rng
        self.max_procs = max_procs
        self.invalid = invalid
        self.ops = dict(KERNEL_OPS)
        if not kernel_only:
            self.ops.update(MODEL_OPS)
        unknown = set(skip_ops) - set(KERNEL_OPS) - set(MODEL_OPS)
        if unknown:
            raise ValueError(f"unknown ops to skip: {', '.join(sorted(unknown))}")
        for op in skip_ops:
            self.ops.pop(op, None)
        if "mmap" not in self.ops:
            raise ValueError("cannot skip mmap: nothing else creates mappings")
        self.skip_ops = frozenset(skip_ops)
        self.kernel_only = kernel_only
        self.procs: dict[str, _Proc] = {"p0": _Proc("p0")}
        self.next_child = 1
        self.next_origin = 1

    # --- choices ----------------------------------------------------------------------

    def _origin(self) -> int:
        self.next_origin += 1
        return self.next_origin

    def _proc(self) -> _Proc:
        return self.procs[self.rng.choice(sorted(self.procs, key=_proc_order))]

    def _prot(self) -> str:
        return self.rng.choices(PROTS, PROT_WEIGHTS)[0]

    def _edges(self, p: _Proc) -> list[int]:
        return sorted({x for seg in p.segments() for x in seg})

    def _point(self, p: _Proc) -> int:
        """A page where something is likely to happen: a VMA edge (or next to
        one), a mapped page, or anywhere in the region."""
        rng = self.rng
        r = rng.random()
        edges = self._edges(p)
        if edges and r < 0.5:
            x = rng.choice(edges) + rng.choice((0, 0, 0, -1, 1))
        elif p.pages and r < 0.85:
            x = rng.choice(sorted(p.pages))
        else:
            x = rng.randrange(REGION)
        return min(max(x, 0), REGION - 1)

    def _range(self, p: _Proc) -> tuple[int, int]:
        """(page, pages): inside one VMA (touching neither, one or both edges),
        from an interesting point to, at or past the next few edges, or short
        and anywhere."""
        rng = self.rng
        r = rng.random()
        seg = self._segment(p)
        if seg is not None and r < 0.5:
            s_start, s_end = seg
            start = s_start if rng.random() < 0.5 else rng.randrange(s_start, s_end)
            end = s_end if rng.random() < 0.5 else rng.randint(start + 1, s_end)
            return start, end - start
        start = self._point(p)
        later = [e for e in self._edges(p) if e > start][:4]
        if later and r < 0.85:
            end = rng.choice(later) + rng.choice((0, 0, 0, -1, 1))
        else:
            end = start + rng.randint(1, 16)
        end = min(max(end, start + 1), start + MAX_LEN, REGION)
        return start, end - start

    def _segment(self, p: _Proc) -> tuple[int, int] | None:
        segs = p.segments()
        return self.rng.choice(segs) if segs else None

    def _free_place(self, p: _Proc, n: int, avoid: tuple[int, int] | None = None) -> int | None:
        """A start page with ``n`` free pages, next to a segment when possible."""
        rng = self.rng
        candidates: list[int] = []
        for start, end in p.segments():
            candidates.append(end)
            candidates.append(start - n)
        for _ in range(4):
            candidates.append(rng.randrange(REGION))
        rng.shuffle(candidates)
        for c in candidates:
            if c < 0 or c + n > REGION or p.free_run(c, n) < n:
                continue
            if avoid is not None and c < avoid[0] + avoid[1] and avoid[0] < c + n:
                continue
            return c
        return None

    # --- steps ------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """The next step: now and then a deliberately invalid one, else an op
        drawn by weight (mostly mmap while the process has nothing mapped)."""
        rng = self.rng
        if self.invalid and rng.random() < INVALID_RATE:
            out = self._invalid(self._proc())
            if out is not None and out["op"] not in self.skip_ops:
                return out
        while True:
            p = self._proc()
            ops = dict(self.ops)
            if not p.pages:
                ops["mmap"] *= 4
            op = rng.choices(list(ops), list(ops.values()))[0]
            out = getattr(self, "_" + op)(p)
            if out is not None:
                return out

    def _mmap(self, p: _Proc) -> dict[str, Any] | None:
        rng = self.rng
        mode = rng.random()
        segs = p.segments()
        start: int | None = None
        n = rng.randint(1, 32)
        before: _Page | None = None
        link = False
        holes = [(a[1], b[0]) for a, b in itertools.pairwise(segs) if b[0] > a[1]]
        linking = [h for h in holes if self._links(p, *h)]
        if linking and (mode < 0.2 or 0.45 <= mode < 0.6):  # fill a hole file pages link
            start, end = rng.choice(linking)
            n = min(end - start, MAX_LEN)
            before = p.pages[start - 1]
            link = True
        elif segs and mode < 0.45:  # right after a segment
            s_end = rng.choice(segs)[1]
            run = p.free_run(s_end)
            if run:
                start, n = s_end, min(n, run)
                before = p.pages[s_end - 1]
        elif segs and holes and mode < 0.6:  # exactly fill a hole between two segments
            start, end = rng.choice(holes)
            n = min(end - start, MAX_LEN)
        if start is None:
            start = self._free_place(p, n)
        if start is None:
            return None
        kind = rng.random()
        prot = self._prot()
        if before is not None and (link or rng.random() < 0.6):
            prot = before.prot  # likely to merge
        file: str | None = None
        file_page = 0
        shared = False
        if before is not None and before.file is not None and (link or rng.random() < 0.5):
            file, file_page, shared = before.file, before.file_page + 1, before.shared
        elif kind < 0.3:  # a private file mapping, often of a file already mapped
            mapped = sorted({pg.file for pg in p.pages.values() if pg.file and not pg.shared})
            file = rng.choice(mapped if mapped and rng.random() < 0.6 else sorted(FILES))
            file_page = rng.randrange(FILES[file])
        elif kind < 0.4:
            file = rng.choice(sorted(FILES))
            file_page = rng.randrange(FILES[file])
            shared = True
        elif kind < 0.45:
            shared = True  # MAP_SHARED|MAP_ANONYMOUS
        if file is not None and rng.random() < 0.9:
            n = max(1, min(n, FILES[file] - file_page))  # mostly inside the file
        step: dict[str, Any] = {"op": "mmap", "proc": p.name, "page": start, "pages": n}
        if prot != "rw":
            step["prot"] = prot
        if file is not None:
            step["file"] = file
            if file_page:
                step["file_page"] = file_page
        if shared:
            step["shared"] = True
        flags = [f for f in ("noreserve", "populate") if rng.random() < 0.1]
        if flags:
            step["flags"] = flags
        origin = before.origin if before is not None and rng.random() < 0.5 else self._origin()
        for i in range(n):
            p.pages[start + i] = _Page(origin, prot, file, file_page + i, shared)
        if "populate" in flags and "w" in prot and not shared:
            p.touched.update(range(start, start + n))
        return step

    @staticmethod
    def _links(p: _Proc, start: int, end: int) -> bool:
        """Do the private mappings of one file on both sides of the hole
        ``[start, end)`` continue each other's file pages across it?"""
        left, right = p.pages.get(start - 1), p.pages.get(end)
        return (
            left is not None
            and right is not None
            and left.file is not None
            and left.file == right.file
            and not left.shared
            and not right.shared
            and right.file_page - left.file_page == end - start + 1
        )

    def _munmap(self, p: _Proc) -> dict[str, Any] | None:
        page, n = self._range(p)
        p.forget(page, n)
        return {"op": "munmap", "proc": p.name, "page": page, "pages": n}

    def _mprotect(self, p: _Proc) -> dict[str, Any] | None:
        page, n = self._range(p)
        prot = self._prot()
        for i in range(page, page + n):  # applied up to the first hole
            if i not in p.pages:
                break
            p.pages[i] = replace(p.pages[i], prot=prot)
        return {"op": "mprotect", "proc": p.name, "page": page, "pages": n, "prot": prot}

    def _madvise(self, p: _Proc) -> dict[str, Any] | None:
        page, n = self._range(p)
        advice = self.rng.choice(ADVICES)
        pages = set(range(page, page + n)) & set(p.pages)
        if advice == "dontfork":
            p.dontfork |= pages
        elif advice == "dofork":
            p.dontfork -= pages
        elif advice == "wipeonfork":
            p.wipeonfork |= pages
        elif advice == "keeponfork":
            p.wipeonfork -= pages
        elif advice in ("dontneed", "free", "pageout"):
            p.touched -= pages
        return {"op": "madvise", "proc": p.name, "page": page, "pages": n, "advice": advice}

    def _access(self, p: _Proc, write: bool) -> dict[str, Any] | None:
        rng = self.rng
        allowed = sorted(page for page, info in p.pages.items() if not write or "w" in info.prot)
        if allowed and rng.random() < 0.9:
            page = rng.choice(allowed)
            n = 1
            while n < 8 and page + n in allowed and rng.random() < 0.7:
                n += 1
        else:
            page, n = self._point(p), rng.randint(1, 4)
        step: dict[str, Any] = {"op": "write" if write else "read", "proc": p.name, "page": page}
        if n != 1:
            step["pages"] = n
        if write:
            if rng.random() < 0.25:
                step["value"] = rng.choice(SMALL_VALUES)
            for i in range(page, page + n):
                info = p.pages.get(i)
                if info is None or "w" not in info.prot:
                    break
                if not info.shared:
                    p.touched.add(i)  # an anon folio is mapped there now
        return step

    def _read(self, p: _Proc) -> dict[str, Any] | None:
        return self._access(p, False)

    def _write(self, p: _Proc) -> dict[str, Any] | None:
        return self._access(p, True)

    def _fork(self, p: _Proc) -> dict[str, Any] | None:
        if len(self.procs) >= self.max_procs:
            return None
        name = f"p{self.next_child}"
        self.next_child += 1
        child = _Proc(name)
        child.pages = {k: v for k, v in p.pages.items() if k not in p.dontfork}
        child.touched = (p.touched - p.dontfork) - p.wipeonfork
        child.wipeonfork = set(p.wipeonfork) & set(child.pages)
        child.moved = list(p.moved)
        self.procs[name] = child
        return {"op": "fork", "proc": p.name, "child": name}

    def _exit(self, p: _Proc) -> dict[str, Any] | None:
        if len(self.procs) < 2:
            return None
        del self.procs[p.name]
        return {"op": "exit", "proc": p.name}

    def _exec(self, p: _Proc) -> dict[str, Any] | None:
        self.procs[p.name] = _Proc(p.name)
        return {"op": "exec", "proc": p.name}

    def _ksm(self, p: _Proc) -> dict[str, Any] | None:
        return {"op": "ksm", "proc": p.name}

    def _client(self, p: _Proc, op: str) -> dict[str, Any] | None:
        rng = self.rng
        live = sorted(p.touched & set(p.pages))
        page = rng.choice(live) if live and rng.random() < 0.9 else self._point(p)
        if op == "reclaim":
            p.touched.discard(page)
        return {"op": op, "proc": p.name, "page": page}

    def _migrate(self, p: _Proc) -> dict[str, Any] | None:
        return self._client(p, "migrate")

    def _reclaim(self, p: _Proc) -> dict[str, Any] | None:
        return self._client(p, "reclaim")

    def _referenced(self, p: _Proc) -> dict[str, Any] | None:
        return self._client(p, "referenced")

    # --- mremap -------------------------------------------------------------------------

    def _mremap(self, p: _Proc) -> dict[str, Any] | None:
        rng = self.rng
        modes = {
            "shrink": 2,
            "grow": 3,
            "move": 4,
            "dontunmap": 2,
            "multi": 2,
            "back": 0,
            "file_linear": 3,
        }
        if p.moved:
            modes["back"] = 4
        mode = rng.choices(list(modes), list(modes.values()))[0]
        if mode == "multi":
            return self._mremap_multi(p)
        if mode == "file_linear":
            return self._mremap_file_linear(p)
        if mode == "back":
            return self._mremap_back(p)
        seg = self._segment(p)
        if seg is None:
            return None
        s_start, s_end = seg
        start = s_start if rng.random() < 0.6 else rng.randrange(s_start, s_end)
        n = s_end - start if rng.random() < 0.6 else rng.randint(1, s_end - start)
        step: dict[str, Any] = {"op": "mremap", "proc": p.name, "page": start, "pages": n}
        if mode == "shrink":
            if n < 2:
                return None
            new_n = rng.randint(1, n - 1)
            step["new_pages"] = new_n
            if rng.random() < 0.3:
                step["flags"] = ["maymove"]
            p.forget(start + new_n, n - new_n)
            return step
        if mode == "grow":
            new_n = min(n + rng.randint(1, 16), REGION - start)
            gap = p.free_run(s_end)
            if (
                start + n == s_end
                and 0 < gap < MAX_LEN
                and s_end + gap in p.pages
                and rng.random() < 0.5
            ):
                new_n = n + gap  # grow in place up to the next mapping: may merge it
            if new_n <= n:
                return None
            step["new_pages"] = new_n
            maymove = rng.random() < 0.6
            if maymove:
                step["flags"] = ["maymove"]
            if start + n == s_end and p.free_run(s_end, new_n - n) >= new_n - n:
                self._copy(p, start, n, start, new_n, keep_source=True)
            elif maymove:
                p.forget(start, n)  # moved out of the window
            return step
        if mode == "dontunmap":
            step["new_pages"] = n
            if rng.random() < 0.25:
                step["flags"] = ["maymove", "dontunmap"]  # lands outside the window
                self._forget_contents(p, start, n)
                return step
            place = self._free_place(p, n, avoid=(start, n))
            if place is None:
                return None
            step.update(flags=["maymove", "fixed", "dontunmap"], new_page=place)
            self._copy(p, start, n, place, n, keep_source=True)
            self._forget_contents(p, start, n)
            p.moved.append((place, n, start))
            return step
        # fixed move, maybe resizing, to a free place, over something, or next door
        new_n = n if rng.random() < 0.6 else rng.randint(1, n + 16)
        r = rng.random()
        dest: int | None
        if r < 0.2:
            dest = self._point(p)
        elif r < 0.35:
            dest = rng.choice((s_start - new_n, s_end, s_end + 1, s_start - new_n - 1))
        else:
            dest = self._free_place(p, new_n, avoid=(start, n))
        if dest is None or dest < 0 or dest + new_n > REGION:
            return None
        if dest < start + n and start < dest + new_n:
            return None  # overlapping: only as a deliberate invalid step
        step.update(new_pages=new_n, flags=["maymove", "fixed"], new_page=dest)
        self._copy(p, start, n, dest, new_n, keep_source=False)
        p.moved.append((dest, new_n, start))
        return step

    def _mremap_file_linear(self, p: _Proc) -> dict[str, Any] | None:
        """Move a private file mapping to where its file pages continue another
        mapping of the same file (adjacent, or with a gap of the file pages in
        between): where a moved, faulted file VMA meets differing anon offsets."""
        rng = self.rng
        files = [
            (a, b) for a, b in p.segments() if p.pages[a].file is not None and not p.pages[a].shared
        ]
        if len(files) < 2:
            return None
        faulted = [seg for seg in files if any(x in p.touched for x in range(*seg))]
        s_start, s_end = rng.choice(faulted if faulted and rng.random() < 0.8 else files)
        src = p.pages[s_start]
        others = [
            (a, b) for a, b in files if (a, b) != (s_start, s_end) and p.pages[a].file == src.file
        ]
        if not others:
            return None
        n = s_end - s_start

        def dest_of(t_start: int) -> int:
            return t_start + src.file_page - p.pages[t_start].file_page

        # best: a faulted mapping of the same prot that ends before the file pages
        # of this one start, with the pages between free (a hole a map can fill)
        good = [
            (a, b)
            for a, b in others
            if any(x in p.touched for x in range(a, b))
            and p.pages[a].prot == src.prot
            and b < dest_of(a)
            and p.free_run(b) >= dest_of(a) - b
        ]
        pool = good if good and rng.random() < 0.7 else others
        t_start = rng.choice(pool)[0]
        dest = dest_of(t_start)
        if dest < 0 or dest + n > REGION or dest == s_start:
            return None
        if any(dest + i in p.pages and not s_start <= dest + i < s_end for i in range(n)):
            return None
        if dest < s_end and s_start < dest + n:
            return None
        self._copy(p, s_start, n, dest, n, keep_source=False)
        p.moved.append((dest, n, s_start))
        return {
            "op": "mremap",
            "proc": p.name,
            "page": s_start,
            "pages": n,
            "new_pages": n,
            "flags": ["maymove", "fixed"],
            "new_page": dest,
        }

    def _mremap_multi(self, p: _Proc) -> dict[str, Any] | None:
        """MREMAP_FIXED without a size change over several VMAs (and holes)."""
        rng = self.rng
        segs = p.segments()
        if len(segs) < 2:
            return None
        i = rng.randrange(len(segs) - 1)
        j = rng.randrange(i + 1, min(len(segs), i + 4))
        start = segs[i][0] if rng.random() < 0.7 else rng.randrange(*segs[i])
        end = segs[j][1] if rng.random() < 0.7 else rng.randrange(segs[j][0] + 1, segs[j][1] + 1)
        n = min(end - start, MAX_LEN)
        dest = self._free_place(p, n, avoid=(start, n))
        if dest is None:
            return None
        self._copy(p, start, n, dest, n, keep_source=False)
        p.moved.append((dest, n, start))
        return {
            "op": "mremap",
            "proc": p.name,
            "page": start,
            "pages": n,
            "new_pages": n,
            "flags": ["maymove", "fixed"],
            "new_page": dest,
        }

    def _mremap_back(self, p: _Proc) -> dict[str, Any] | None:
        """Move an earlier moved range back to its origin, or right next to it."""
        rng = self.rng
        dest_start, n, origin = p.moved.pop(rng.randrange(len(p.moved)))
        if dest_start not in p.pages:
            return None
        n = min(n, 1 + max(i for i in range(n) if dest_start + i in p.pages))
        new_page = origin + rng.choice((0, 0, 0, n, -n, 1, -1))
        if new_page < 0 or new_page + n > REGION:
            return None
        if new_page < dest_start + n and dest_start < new_page + n:
            return None
        self._copy(p, dest_start, n, new_page, n, keep_source=False)
        return {
            "op": "mremap",
            "proc": p.name,
            "page": dest_start,
            "pages": n,
            "new_pages": n,
            "flags": ["maymove", "fixed"],
            "new_page": new_page,
        }

    def _copy(self, p: _Proc, src: int, n: int, dest: int, new_n: int, keep_source: bool) -> None:
        """Shadow of a move of [src, src+n) to [dest, dest+new_n)."""
        moved = {i: p.pages[src + i] for i in range(min(n, new_n)) if src + i in p.pages}
        touched = {i for i in moved if src + i in p.touched}
        last = moved[max(moved)] if moved else None
        if not keep_source:
            p.forget(src, n)
        if dest != src:
            p.forget(dest, new_n)
        for i, page in moved.items():
            p.pages[dest + i] = page
        p.touched |= {dest + i for i in touched}
        if last is not None:
            for i in range(max(moved) + 1, new_n):
                p.pages[dest + i] = replace(last, file_page=last.file_page + i - max(moved))

    def _forget_contents(self, p: _Proc, start: int, n: int) -> None:
        p.touched -= set(range(start, start + n))

    # --- invalid ----------------------------------------------------------------------

    def _invalid(self, p: _Proc) -> dict[str, Any] | None:
        """Arguments the schema admits and the kernel refuses (or that fault)."""
        rng = self.rng
        kind = rng.randrange(10)
        page, n = self._range(p)
        name = p.name
        if kind == 0:
            return {"op": "mmap", "proc": name, "page": page, "pages": 0}
        if kind == 1 and p.pages:  # EEXIST: MAP_FIXED_NOREPLACE over a mapping
            return {"op": "mmap", "proc": name, "page": rng.choice(sorted(p.pages)), "pages": n}
        if kind == 2:
            return {"op": "munmap", "proc": name, "page": page, "pages": 0}
        if kind == 3:  # MREMAP_FIXED without MREMAP_MAYMOVE
            dest = self._free_place(p, n, avoid=(page, n)) or 0
            return {
                "op": "mremap",
                "proc": name,
                "page": page,
                "pages": n,
                "new_pages": n,
                "flags": ["fixed"],
                "new_page": dest,
            }
        if kind == 4:  # old and new ranges overlap
            return {
                "op": "mremap",
                "proc": name,
                "page": page,
                "pages": n,
                "new_pages": n,
                "flags": ["maymove", "fixed"],
                "new_page": max(0, page + rng.randint(-n + 1, n - 1)),
            }
        if kind == 5:  # MREMAP_DONTUNMAP with a size change
            return {
                "op": "mremap",
                "proc": name,
                "page": page,
                "pages": n,
                "new_pages": n + 1,
                "flags": ["maymove", "dontunmap"],
            }
        if kind == 6:
            return {"op": "mremap", "proc": name, "page": page, "pages": n, "new_pages": 0}
        if kind == 7:  # a hole: EFAULT, or SIGSEGV for an access
            hole = [i for i in range(REGION) if i not in p.pages]
            at = rng.choice(hole) if hole else page
            op = rng.choice(("mremap", "write", "read"))
            if op == "mremap":
                return {"op": op, "proc": name, "page": at, "pages": 1, "new_pages": 2}
            return {"op": op, "proc": name, "page": at}
        if kind == 8:  # a file mapping past EOF: SIGBUS on access
            file = rng.choice(sorted(FILES))
            free = self._free_place(p, 2)
            if free is None:
                return None
            at = free
            p.pages[at] = _Page(self._origin(), "rw", file, FILES[file] + 1, False)
            p.pages[at + 1] = _Page(self._origin(), "rw", file, FILES[file] + 2, False)
            return {
                "op": "mmap",
                "proc": name,
                "page": at,
                "pages": 2,
                "file": file,
                "file_page": FILES[file] - 1,
            }
        if kind == 9 and not self.kernel_only:
            return {"op": rng.choice(("migrate", "reclaim", "referenced")), "proc": name, "page": 0}
        return None


def _proc_order(name: str) -> int:
    return int(name[1:])


def generate_steps(
    rng: random.Random,
    n_steps: int,
    *,
    max_procs: int = 6,
    kernel_only: bool = False,
    invalid: bool = True,
    skip_ops: Collection[str] = (),
) -> list[dict[str, Any]]:
    """``n_steps`` SCENARIO.md step dicts (no ``errno``: the model says what fails),
    over the files in :data:`FILES`, with at most ``max_procs`` live processes.
    ``kernel_only`` leaves out model-only ops; ``skip_ops`` leaves out more (to hunt
    past a known bug)."""
    gen = _Generator(rng, max_procs, kernel_only, invalid, skip_ops)
    return [gen.step() for _ in range(n_steps)]


def files_block() -> dict[str, dict[str, int]]:
    """The ``files:`` block of a generated scenario."""
    return {name: {"pages": pages} for name, pages in FILES.items()}


def generate_scenario(
    seed: int,
    n_steps: int,
    *,
    name: str | None = None,
    max_procs: int = 6,
    kernel_only: bool = False,
    invalid: bool = True,
    skip_ops: Collection[str] = (),
) -> Scenario:
    """A validated scenario of ``n_steps`` random steps; the same seed gives the same file."""
    steps = generate_steps(
        random.Random(seed),
        n_steps,
        max_procs=max_procs,
        kernel_only=kernel_only,
        invalid=invalid,
        skip_ops=skip_ops,
    )
    data = {
        "format": FORMAT,
        "name": name or f"fuzz-{seed}",
        "description": f"generated by cowctx.fuzz (seed {seed}, {n_steps} steps)",
        "files": files_block(),
        "steps": steps,
    }
    return parse_scenario(data, f"<generated seed {seed}>")
