"""The fuzzer: random scenarios on one design, the oracle after every step, and
the first failure shrunk to a scenario file.

Steps run in chunks, each a fresh machine and a fresh random scenario, so a
chunk that fails is short enough to shrink; chunk ``i`` of seed ``s`` is always
the same scenario.  A failure is an oracle violation, or a Python exception
inside the model (the model must never crash on input the schema admits).
"""

from __future__ import annotations

import random
import re
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from cowctx.fuzz.generate import files_block, generate_steps
from cowctx.fuzz.shrink import Steps, scenario_yaml, shrink_steps
from cowctx.rmap.protocol import AnonRmap
from cowctx.scenario.loader import ScenarioError, parse_scenario
from cowctx.scenario.runner import run_scenario
from cowctx.scenario.schema import FORMAT, Scenario

ProgressCallback = Callable[[int, int], None]
"""``progress(steps_done, steps_total)`` after each chunk."""
ShrinkCallback = Callable[[int, int], None]
"""``shrink_progress(candidates_tried, steps_in_smallest_failing_list)``."""


@dataclass(frozen=True)
class FuzzFailure:
    """How a step list failed: the first violation, or an exception in the model."""

    kind: str
    """The violation kind (``missed``, ``mapcount``, ...) or ``exception``."""
    detail: str
    step: int | None = None
    op: str | None = None
    exception_type: str | None = None
    traceback: str | None = None

    @property
    def signature(self) -> str:
        """What a shrunk list must keep failing with."""
        if self.exception_type is not None:
            return f"exception:{self.exception_type}"
        return self.kind

    def __str__(self) -> str:
        where = f"step {self.step} ({self.op}): " if self.step is not None else ""
        return f"{where}{self.kind}: {self.detail}"


@dataclass
class FuzzResult:
    design: str
    seed: int
    steps_requested: int
    steps_run: int
    chunk: int
    chunk_index: int | None = None
    failure: FuzzFailure | None = None
    """The failure as found in the random chunk."""
    original_steps: Steps = field(default_factory=list)
    """The failing chunk, up to the failing step."""
    shrunk_steps: Steps = field(default_factory=list)
    shrunk_failure: FuzzFailure | None = None
    """The failure of the shrunk list (same kind, maybe other detail)."""
    shrink_tests: int = 0
    files: dict[str, dict[str, int]] = field(default_factory=files_block)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def scenario_name(self) -> str:
        design = re.sub(r"[^a-z0-9._-]+", "-", self.design.lower())
        return f"fuzz-{design}-seed{self.seed}-chunk{self.chunk_index}"

    def scenario_yaml(self) -> str:
        """The shrunk failing scenario as a ``cowctx-scenario/1`` file."""
        failure = self.shrunk_failure or self.failure
        description = (
            f"Found by `cowctx fuzz --design {self.design} --seed {self.seed} "
            f"--chunk {self.chunk}` in chunk {self.chunk_index}, shrunk from "
            f"{len(self.original_steps)} to {len(self.shrunk_steps)} steps. "
            f"Fails with {failure}"
        )
        return scenario_yaml(self.scenario_name, self.shrunk_steps, self.files, description)


def chunk_rng(seed: int, index: int) -> random.Random:
    """The generator of chunk ``index``: independent of the chunk size of earlier chunks."""
    return random.Random(f"cowctx-fuzz/{seed}/{index}")


def scenario_of(steps: Steps, name: str = "fuzz") -> Scenario:
    """Validate generated or shrunk steps as a scenario over the fuzz files."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "files": files_block(),
        "steps": steps,
    }
    return parse_scenario(data, f"<{name}>")


def run_steps(steps: Steps, design: str | type[AnonRmap]) -> FuzzFailure | None:
    """Run ``steps`` on a fresh machine with the oracle on; the first failure."""
    scenario = scenario_of(steps)
    try:
        run = run_scenario(scenario, design, stop_on_violation=True)
    except Exception as exc:
        return FuzzFailure(
            "exception",
            f"{type(exc).__name__}: {exc}",
            exception_type=type(exc).__name__,
            traceback=traceback.format_exc(),
        )
    if not run.violations:
        return None
    v = run.violations[0]
    return FuzzFailure(v.kind, v.detail, v.step, v.op)


def fuzz(
    design: str,
    steps: int,
    seed: int,
    *,
    chunk: int = 200,
    progress: ProgressCallback | None = None,
    shrink_progress: ShrinkCallback | None = None,
    design_factory: type[AnonRmap] | None = None,
    max_procs: int = 6,
    kernel_only: bool = False,
    skip_ops: Collection[str] = (),
) -> FuzzResult:
    """Run ``steps`` random steps on ``design`` (or on ``design_factory``, an
    :class:`AnonRmap` subclass labelled ``design``) and shrink the first failure."""
    target: str | type[AnonRmap] = design_factory if design_factory is not None else design
    result = FuzzResult(design, seed, steps, 0, chunk)
    index = 0
    while result.steps_run < steps:
        n = min(chunk, steps - result.steps_run)
        chunk_steps = generate_steps(
            chunk_rng(seed, index),
            n,
            max_procs=max_procs,
            kernel_only=kernel_only,
            skip_ops=skip_ops,
        )
        failure = run_steps(chunk_steps, target)
        if failure is not None:
            ran = failure.step + 1 if failure.step is not None else n
            result.steps_run += ran
            if progress is not None:
                progress(result.steps_run, steps)
            result.chunk_index = index
            result.failure = failure
            result.original_steps = chunk_steps[:ran]
            _shrink(result, target, shrink_progress)
            return result
        result.steps_run += n
        index += 1
        if progress is not None:
            progress(result.steps_run, steps)
    return result


def _shrink(
    result: FuzzResult, target: str | type[AnonRmap], shrink_progress: ShrinkCallback | None
) -> None:
    assert result.failure is not None
    signature = result.failure.signature
    smallest = len(result.original_steps)
    tried = 0

    def still_fails(candidate: Steps) -> bool:
        nonlocal tried, smallest
        tried += 1
        try:
            failure = run_steps(candidate, target)
        except ScenarioError:
            return False
        fails = failure is not None and failure.signature == signature
        if fails:
            smallest = min(smallest, len(candidate))
        if shrink_progress is not None:
            shrink_progress(tried, smallest)
        return fails

    result.shrunk_steps = shrink_steps(result.original_steps, still_fails)
    result.shrink_tests = tried
    result.shrunk_failure = run_steps(result.shrunk_steps, target)
