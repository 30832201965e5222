"""Independent jobs on local processes or a Dask cluster, with their results in
submission order: one way to fan work out for ``cowctx sweep`` and ``cowctx
explore --suite``, so that who runs a job never changes what comes out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")

OnDone = Callable[[int, int, Any], None]
"""``on_done(done, total, result)``: a job finished (in completion order)."""


def map_in_order(
    fn: Callable[..., T],
    args: list[tuple[Any, ...]],
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    on_done: OnDone | None = None,
) -> Iterator[T]:
    """``fn(*a)`` for each ``a`` in ``args``, yielded in that order, each as soon
    as it and every earlier one are done: on the Dask scheduler at
    ``dask_address``, else on ``workers`` local processes (default one per CPU;
    1: in this process, no pool)."""
    total = len(args)
    if dask_address is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(dask_address) as client:
            futures = client.map(fn, *zip(*args, strict=True), pure=False) if args else []
            yield from _in_order(futures, dask_completed(futures), on_done)
        return
    count = min(workers or os.cpu_count() or 1, total) or 1
    if count == 1:
        for i, a in enumerate(args):
            out = fn(*a)
            if on_done is not None:
                on_done(i + 1, total, out)
            yield out
        return
    with ProcessPoolExecutor(max_workers=count) as pool:
        local = [pool.submit(fn, *a) for a in args]
        yield from _in_order(local, as_completed(local), on_done)


def _in_order(
    futures: list[Any], completed: Iterable[Any], on_done: OnDone | None
) -> Iterator[Any]:
    index = {id(f): i for i, f in enumerate(futures)}
    ready: dict[int, Any] = {}
    nxt = 0
    for done, future in enumerate(completed, 1):
        i = index[id(future)]
        ready[i] = future.result()
        if on_done is not None:
            on_done(done, len(futures), ready[i])
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1
