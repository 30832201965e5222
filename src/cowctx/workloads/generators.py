"""The workload generators.  Each returns (steps, files): SCENARIO.md step dicts
and the files they map.  Everything is deterministic: placements and write
patterns are computed, never drawn at random."""

from __future__ import annotations

from typing import Any

Step = dict[str, Any]
Steps = tuple[list[Step], dict[str, int] | None]


def _spread(total: int, fraction: float, index: int, count: int) -> tuple[int, int]:
    """A run of ``fraction * total`` pages for participant ``index`` of ``count``,
    staggered so that participants overlap only partly."""
    length = max(1, int(total * fraction))
    start = (index * max(1, (total - length) // max(1, count))) % max(1, total - length + 1)
    return start, length


def prefork(heap_pages: int, workers: int, dirty: float) -> Steps:
    """Prefork server (Apache prefork, PostgreSQL backends): a parent builds its
    heap, forks K workers that stay, and each worker dirties a fraction of the
    inherited heap (CoW) and allocates a private working area of its own."""
    steps: list[Step] = [
        {"op": "mmap", "page": 0, "pages": heap_pages},
        {"op": "write", "page": 0, "pages": heap_pages},
    ]
    own = heap_pages + 16
    for i in range(workers):
        name = f"w{i}"
        start, length = _spread(heap_pages, dirty, i, workers)
        steps += [
            {"op": "fork", "child": name},
            {"op": "write", "proc": name, "page": start, "pages": length},
            {"op": "mmap", "proc": name, "page": own, "pages": 64},
            {"op": "write", "proc": name, "page": own, "pages": 64},
        ]
    return steps, None


def zygote(heap_pages: int, apps: int, app_pages: int, dirty: float) -> Steps:
    """Android zygote: one process preloads a large heap in a few VMAs (classes,
    resources, a private mapping of a framework file), then forks N apps that
    live on; each app dirties a little of the shared heap and maps and writes
    its own memory."""
    steps: list[Step] = []
    part = max(1, heap_pages // 4)
    for k in range(4):  # four heap VMAs kept apart by one-page gaps
        base = k * (part + 1)
        steps += [
            {"op": "mmap", "page": base, "pages": part},
            {"op": "write", "page": base, "pages": part},
        ]
    fbase = 4 * (part + 1)
    steps += [
        {"op": "mmap", "page": fbase, "pages": 64, "file": "framework"},
        {"op": "read", "page": fbase, "pages": 64},
        {"op": "write", "page": fbase, "pages": 8},
    ]
    own = fbase + 65
    for i in range(apps):
        name = f"app{i}"
        start, length = _spread(4 * part, dirty, i, apps)
        base = (start // part) * (part + 1) + start % part
        length = min(length, part - start % part)
        steps += [
            {"op": "fork", "child": name},
            {"op": "write", "proc": name, "page": base, "pages": length},
            {"op": "mmap", "proc": name, "page": own, "pages": app_pages},
            {"op": "write", "proc": name, "page": own, "pages": app_pages},
        ]
    return steps, {"framework": 64}


def fork_chain(depth: int, pages: int) -> Steps:
    """A fork chain: each generation writes all its pages, then forks the next,
    and stays.  The case that made Linux add anon_vma reuse (commit 7a3ef208e662):
    n live generations cost n anon_vmas and n(n+1)/2 AVCs."""
    steps: list[Step] = [{"op": "mmap", "page": 0, "pages": pages}]
    proc = "p0"
    for level in range(depth):
        child = f"g{level + 1}"
        steps += [
            {"op": "write", "proc": proc, "page": 0, "pages": pages},
            {"op": "fork", "proc": proc, "child": child},
        ]
        proc = child
    steps.append({"op": "write", "proc": proc, "page": 0, "pages": pages})
    return steps, None


def fork_exit_storm(iterations: int, vmas: int, pages: int) -> Steps:
    """AIM7-style fork/exit storm: a parent with a few faulted VMAs forks a child
    that touches each VMA and exits, over and over (the 2009 report of anon_vma
    lock contention)."""
    steps: list[Step] = []
    for v in range(vmas):
        base = v * (pages + 1)
        steps += [
            {"op": "mmap", "page": base, "pages": pages},
            {"op": "write", "page": base, "pages": pages},
        ]
    for i in range(iterations):
        name = f"c{i}"
        steps.append({"op": "fork", "child": name})
        for v in range(vmas):
            steps.append({"op": "write", "proc": name, "page": v * (pages + 1) + i % pages})
        steps.append({"op": "exit", "proc": name})
    return steps, None


def many_vmas_fanout(vmas: int, children: int) -> Steps:
    """A parent with many small faulted VMAs forks many children that stay (the
    fan-out raised in review of the CoW context PoC: 1,000 VMAs, then fork)."""
    steps: list[Step] = []
    for v in range(vmas):
        steps += [{"op": "mmap", "page": 2 * v, "pages": 1}, {"op": "write", "page": 2 * v}]
    for i in range(children):
        name = f"c{i}"
        steps += [
            {"op": "fork", "child": name},
            {"op": "write", "proc": name, "page": 2 * (i % vmas)},
        ]
    return steps, None


def mremap_realloc(buffers: int, growths: int, start_pages: int) -> Steps:
    """An allocator growing large buffers with mremap (glibc realloc of mmapped
    chunks): each buffer doubles in place while the room after it lasts, then
    moves (MREMAP_MAYMOVE|MREMAP_FIXED, to stay in the scenario window) to a new
    region; every growth writes the new half; a quarter of the buffers are freed."""
    room = start_pages * (1 << max(1, growths // 2))
    steps: list[Step] = []
    where: list[int] = []
    for b in range(buffers):
        base = b * (room + 1)
        where.append(base)
        steps += [
            {"op": "mmap", "page": base, "pages": start_pages},
            {"op": "write", "page": base, "pages": start_pages},
        ]
    free_at = buffers * (room + 1)
    size = start_pages
    for _ in range(growths):
        new = size * 2
        for b in range(buffers):
            if new <= room and where[b] < buffers * (room + 1):
                steps.append({"op": "mremap", "page": where[b], "pages": size, "new_pages": new})
            else:
                steps.append(
                    {
                        "op": "mremap",
                        "page": where[b],
                        "pages": size,
                        "new_pages": new,
                        "new_page": free_at,
                        "flags": ["maymove", "fixed"],
                    }
                )
                where[b] = free_at
                free_at += new + 1
            steps.append({"op": "write", "page": where[b] + size, "pages": size})
        size = new
    for b in range(0, buffers, 4):
        steps.append({"op": "munmap", "page": where[b], "pages": size})
    return steps, None


def remap_cycles(cycles: int, pages: int) -> Steps:
    """An allocator reusing one address for buffers that it moves away and frees
    (mmap, write, mremap elsewhere, munmap, again), then a last buffer there
    shared with a fork child: every cycle leaves the same pgoff range a remap
    offset where a design keeps them after the unmap."""
    steps: list[Step] = []
    for i in range(cycles):
        away = (i + 1) * (pages + 1) + pages
        steps += [
            {"op": "mmap", "page": 0, "pages": pages},
            {"op": "write", "page": 0, "pages": pages},
            {
                "op": "mremap",
                "page": 0,
                "pages": pages,
                "new_pages": pages,
                "new_page": away,
                "flags": ["maymove", "fixed"],
            },
            {"op": "munmap", "page": away, "pages": pages},
        ]
    steps += [
        {"op": "mmap", "page": 0, "pages": pages},
        {"op": "write", "page": 0, "pages": pages},
        {"op": "fork", "child": "c1"},
    ]
    return steps, None


def bgsave(heap_pages: int, snapshots: int, dirty: float) -> Steps:
    """A snapshotting server (Redis BGSAVE): the parent forks a child that reads
    the whole dataset and exits, while the parent keeps writing (every write of a
    shared page is a CoW in the parent)."""
    steps: list[Step] = [
        {"op": "mmap", "page": 0, "pages": heap_pages},
        {"op": "write", "page": 0, "pages": heap_pages},
    ]
    for s in range(snapshots):
        name = f"save{s}"
        start, length = _spread(heap_pages, dirty, s, snapshots)
        steps += [
            {"op": "fork", "child": name},
            {"op": "write", "page": start, "pages": length},
            {"op": "read", "proc": name, "page": 0, "pages": heap_pages},
            {"op": "exit", "proc": name},
        ]
    return steps, None


def build_jobs(jobs: int, parallel: int, job_pages: int) -> Steps:
    """fork+exec build jobs (make -j): the driver forks a job, the job execs a
    compiler (a fresh mm), maps and writes its own memory, grows it, and exits;
    ``parallel`` jobs are alive at once."""
    steps: list[Step] = [
        {"op": "mmap", "page": 0, "pages": 256},
        {"op": "write", "page": 0, "pages": 256},
    ]
    running: list[str] = []
    for j in range(jobs):
        name = f"job{j}"
        steps += [
            {"op": "fork", "child": name},
            {"op": "exec", "proc": name},
            {"op": "mmap", "proc": name, "page": 1024, "pages": job_pages},
            {"op": "write", "proc": name, "page": 1024, "pages": job_pages},
            {
                "op": "mremap",
                "proc": name,
                "page": 1024,
                "pages": job_pages,
                "new_pages": 2 * job_pages,
            },
            {"op": "write", "proc": name, "page": 1024 + job_pages, "pages": job_pages},
        ]
        running.append(name)
        if len(running) >= parallel:
            steps.append({"op": "exit", "proc": running.pop(0)})
    steps += [{"op": "exit", "proc": name} for name in running]
    return steps, None


def sharded_workers(heap_pages: int, workers: int) -> Steps:
    """Sharded workers: a parent loads a dataset and forks N workers; each keeps
    only its own shard (unmapping the rest) and works on it.  A page of the
    parent's is then mapped by the parent and one worker: anon_vma's interval
    tree finds those two among the workers' VMAs by page offset, CoW context
    visits every worker's context."""
    steps: list[Step] = [
        {"op": "mmap", "page": 0, "pages": heap_pages},
        {"op": "write", "page": 0, "pages": heap_pages},
    ]
    shard = max(1, heap_pages // workers)
    for i in range(workers):
        name = f"s{i}"
        start = i * shard
        steps.append({"op": "fork", "child": name})
        if start:
            steps.append({"op": "munmap", "proc": name, "page": 0, "pages": start})
        if start + shard < heap_pages:
            steps.append(
                {
                    "op": "munmap",
                    "proc": name,
                    "page": start + shard,
                    "pages": heap_pages - start - shard,
                }
            )
        steps.append({"op": "write", "proc": name, "page": start, "pages": max(1, shard // 4)})
    return steps, None
