"""The referee's swap file: MADV_PAGEOUT really swaps on both sides, swap entries and swap-in
compare, and no swap file or swap area is left after any exit path (a SIGKILLed controller's
is removed by the next run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cowctx.linux import executor
from cowctx.linux import swap as swapmod
from cowctx.linux.diff import diff_results
from cowctx.linux.executor import KernelSession, run_on_kernel
from cowctx.linux.swap import (
    PREFIX,
    SwapFile,
    active_swaps,
    header,
    pages_for,
    remove_stale_swapfiles,
    swap_unavailable_reason,
    wants_swap,
)
from cowctx.linux.views import add_model_views
from cowctx.scenario.loader import load_scenario
from cowctx.scenario.runner import run_scenario

from .conftest import skip_or_fail
from .helpers import ROOT, scenario


@pytest.fixture
def swap_possible() -> None:
    reason = swap_unavailable_reason()
    if reason is not None:
        skip_or_fail(f"no swap file possible here: {reason}")


def needs_swap(test: Any) -> Any:
    """A kernel test that switches a swap file on."""
    return pytest.mark.kernel(pytest.mark.usefixtures("swap_possible")(test))


FORK_SWAPIN = ROOT / "scenarios" / "kernel-fuzz" / "swap-fork-swapin.yaml"

PAGEOUT: list[dict[str, Any]] = [
    {"op": "mmap", "proc": "p0", "page": 0, "pages": 8},
    {"op": "write", "proc": "p0", "page": 0, "pages": 8},
    {"op": "madvise", "proc": "p0", "page": 0, "pages": 8, "advice": "pageout"},
    {"op": "fork", "proc": "p0", "child": "p1"},
]


def ours() -> list[str]:
    """Swap files of this process, on disk or active."""
    mine = f"{PREFIX}{os.getpid()}"
    on_disk = [p.name for p in swapmod.SWAP_DIR.glob(mine + "*")]
    return on_disk + [s for s in active_swaps() if Path(s).name.startswith(mine)]


def test_header_layout() -> None:
    h = header(100)
    assert len(h) == 4096
    assert h[-10:] == b"SWAPSPACE2"
    assert int.from_bytes(h[1024:1028], "little") == 1  # version
    assert int.from_bytes(h[1028:1032], "little") == 99  # last_page
    assert int.from_bytes(h[1032:1036], "little") == 0  # nr_badpages


def test_which_scenarios_get_swap() -> None:
    assert wants_swap(scenario("s", PAGEOUT))
    assert not wants_swap(scenario("s", PAGEOUT[:2]))
    shared = [{**PAGEOUT[0], "shared": True}, *PAGEOUT[1:]]
    assert not wants_swap(scenario("s", shared))
    assert pages_for(scenario("s", PAGEOUT)) == 8 * 2 + swapmod.MIN_PAGES


@needs_swap
def test_swap_file_on_and_gone() -> None:
    with SwapFile(128) as sw:
        assert str(sw.path) in active_swaps()
        assert (sw.path.stat().st_mode & 0o777) == 0o600
    assert ours() == []


@needs_swap
def test_pageout_really_swaps_and_fork_shares_entries() -> None:
    r = run_on_kernel(scenario("pageout-fork", PAGEOUT))
    assert r.kernel["kernel"]["swap"]["pages"] == pages_for(scenario("s", PAGEOUT))
    assert isinstance(r.kernel["kernel"]["swap"]["damon"], list)
    swapped = r.final.swap
    assert swapped is not None
    assert [e["page"] for e in swapped["p0"]] == list(range(8))
    assert swapped["p1"] == swapped["p0"]  # fork copied the swap entries: same slots
    assert r.final.pages == {"p0": [], "p1": []}
    assert ours() == []


@needs_swap
def test_model_without_swap_is_caught() -> None:
    """The diff sees swap entries: a model that keeps the pages mapped disagrees."""
    sc = load_scenario(FORK_SWAPIN)
    with KernelSession() as s:
        kernel = s.run(sc)
    run = run_scenario(sc, check=False)  # no swap
    model = run.result()
    add_model_views(sc, "anon_vma", run, model, kernel)
    diffs = diff_results(model, kernel)
    assert "final.swap.p0[page 0]: model not swapped, kernel swap entry 0" in diffs


@needs_swap
def test_swap_scenario_agrees_including_swapin_graph() -> None:
    from cowctx.linux.diff import kernel_diff

    with KernelSession() as s:
        model, kernel, diffs = kernel_diff(load_scenario(FORK_SWAPIN), s)
    assert diffs == []
    graph = kernel.final.graph
    assert graph is not None
    folios = {f["page"]: f for f in graph["folios"]["p1"]}
    assert folios[2]["anon_vma"] == "AV(p0 fault step 1)"  # read swap-in: the root
    assert folios[2]["exclusive"] is False
    assert folios[3]["anon_vma"] == "AV(p0 fork step 3)"  # write swap-in of a shared slot
    assert folios[3]["exclusive"] is False  # ... then shared by p1's fork of p2
    p2 = {f["page"]: f for f in graph["folios"]["p2"]}
    assert p2[3]["anon_vma"] == "AV(p1 fork step 9)"  # p2's CoW copy: its own, exclusive
    assert p2[3]["exclusive"] is True
    assert model.final.swap == kernel.final.swap


@needs_swap
def test_swap_removed_after_error(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def interrupted(self: executor._Run) -> dict[str, Any]:
        seen.extend(active_swaps())
        raise KeyboardInterrupt

    monkeypatch.setattr(executor._Run, "final_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_on_kernel(scenario("interrupted", PAGEOUT))
    assert any(Path(s).name.startswith(f"{PREFIX}{os.getpid()}") for s in seen)
    assert ours() == []


@needs_swap
def test_killed_controller_swap_removed_by_next_run(tmp_path: Path) -> None:
    """SIGKILL leaves the swap file on; the next session swaps it off and deletes it."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        from cowctx.linux.swap import SwapFile
        sw = SwapFile(128)
        sw.enable()
        print(sw.path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    left = proc.stdout.strip()
    assert left in active_swaps() and Path(left).exists()
    assert Path(left).name in remove_stale_swapfiles()
    assert left not in active_swaps() and not Path(left).exists()


def test_swap_variant_is_private_anonymous_with_pageout_and_swapin() -> None:
    from cowctx.fuzz.generate import generate_scenario
    from cowctx.linux.fuzz import swap_variant

    made = [swap_variant(generate_scenario(seed, 60, kernel_only=True), seed) for seed in range(20)]
    assert made == [
        swap_variant(generate_scenario(seed, 60, kernel_only=True), seed) for seed in range(20)
    ]
    for sc in made:
        assert not any(s.op == "mmap" and (s.file or s.shared) for s in sc.steps)
    with_pageout = [sc for sc in made if wants_swap(sc)]
    assert len(with_pageout) >= 15
    swapins = 0
    for sc in with_pageout:
        for a, b in zip(sc.steps, sc.steps[1:], strict=False):
            if (
                a.op == "madvise"
                and a.advice == "pageout"
                and b.op in ("read", "write")
                and b.proc == a.proc
                and a.page <= b.page < a.page + a.pages
            ):
                swapins += 1
    assert swapins >= 10


def test_parse_vmscan_line() -> None:
    from cowctx.linux.tracefs import parse_vmscan_line

    line = (
        " cowctx-worker-4242 [001] ..... 123.456789: mm_vmscan_reclaim_pages: nid=0 "
        "nr_scanned=8 nr_reclaimed=3 nr_dirty=0 nr_writeback=1 nr_congested=0 nr_immediate=0 "
        "nr_activate_anon=5 nr_activate_file=0 nr_ref_keep=0 nr_unmap_fail=2"
    )
    parsed = parse_vmscan_line(line)
    assert parsed is not None
    pid, c = parsed
    assert pid == 4242
    assert (c["nr_scanned"], c["nr_reclaimed"], c["nr_activate_anon"]) == (8, 3, 5)
    assert (c["nr_writeback"], c["nr_unmap_fail"]) == (1, 2)
    assert parse_vmscan_line(line.replace("reclaim_pages", "lru_isolate")) is None


@needs_swap
def test_pageout_verdicts_from_vmscan() -> None:
    """Without swap an anon folio is activated (kept mapped); with the swap file it is
    unmapped to swap but not reclaimed at once: written back asynchronously, it stays in
    the swap cache (nr_reclaimed 0)."""
    no_swap = [{**PAGEOUT[0], "shared": False}, *PAGEOUT[1:3]]
    with KernelSession(swap=False) as s:
        kept = s.run(scenario("pageout-no-swap", no_swap))
    assert kept.kernel["kernel"]["swap"] is None
    vm = kept.steps[2].vmscan
    assert vm is not None
    assert (vm["nr_scanned"], vm["nr_reclaimed"], vm["nr_activate_anon"]) == (8, 0, 8)
    swapped = run_on_kernel(scenario("pageout-swap", no_swap))
    vm = swapped.steps[2].vmscan
    assert vm is not None
    assert (vm["nr_scanned"], vm["nr_reclaimed"], vm["nr_activate_anon"]) == (8, 0, 0)
    assert swapped.final.swap is not None and len(swapped.final.swap["p0"]) == 8


@needs_swap
def test_swap_that_cannot_be_switched_on_runs_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """A swap directory swapon refuses (tmpfs here): the run says why and neither side swaps."""
    from cowctx.linux.diff import kernel_diff

    monkeypatch.setattr(swapmod, "SWAP_DIR", Path("/dev/shm"))
    with KernelSession() as s:
        _, kernel, diffs = kernel_diff(scenario("pageout", PAGEOUT), s)
    assert kernel.kernel["kernel"]["swap"] is None
    assert "cannot switch a swap file on" in kernel.kernel["kernel"]["swap_unavailable"]
    assert diffs == []
    assert kernel.final.swap == {"p0": [], "p1": []}
    assert not list(Path("/dev/shm").glob(PREFIX + "*"))
