"""Check a result against a scenario's ``expect`` block."""

from __future__ import annotations

from cowctx.scenario.results import ScenarioResult
from cowctx.scenario.schema import Scenario


def check_expect(scenario: Scenario, result: ScenarioResult) -> list[str]:
    """Failures, one message each naming the field; empty when all hold.

    Object kinds the design does not have (anon_vma counts on a CoW context
    design) are not checked; ``maps`` (Linux's layout) is checked on anon_vma,
    ``design_maps.<design>`` on that design; with a ``violations`` block the
    oracle's violation kinds must be exactly those listed for the design.
    """
    expect = scenario.expect
    if expect is None:
        return []
    failures: list[str] = []
    objects = result.final.objects
    for kind, want in expect.object_counts().items():
        if kind not in objects:
            continue
        for field in ("live", "allocated", "freed"):
            wanted = getattr(want, field)
            got = getattr(objects[kind], field)
            if wanted is not None and got != wanted:
                failures.append(f"expect.{kind}.{field}: expected {wanted}, got {got}")
    design = result.design
    maps = expect.design_maps.get(design)
    if maps is None and design == "anon_vma":
        maps = expect.maps
    if maps is not None:
        got_maps = result.final.maps
        for proc, lines in maps.items():
            want_lines = [list(line) for line in lines]
            got = got_maps.get(proc)
            if got is None:
                failures.append(f"expect.maps.{proc}: process is not alive at the end")
            elif [m.to_json() for m in got] != want_lines:
                got_lines = [m.to_json() for m in got]
                failures.append(f"expect.maps.{proc}: expected {want_lines}, got {got_lines}")
    want_kinds = sorted(set(expect.violations.get(design, [])))
    got_kinds = sorted({v.kind for v in result.violations})
    if expect.violations and want_kinds != got_kinds:
        failures.append(f"expect.violations.{design}: expected {want_kinds}, got {got_kinds}")
    for i, (step, rec) in enumerate(zip(scenario.steps, result.steps, strict=False)):
        if step.errno != rec.errno:
            failures.append(f"steps.{i} ({step.op}).errno: expected {step.errno}, got {rec.errno}")
    return failures


def scenario_failed(scenario: Scenario, result: ScenarioResult, failures: list[str]) -> bool:
    """A run fails on an expectation failure, or on an oracle violation the
    scenario does not expect (an ``expect.violations`` block says which it does)."""
    if failures:
        return True
    if scenario.expect is not None and scenario.expect.violations:
        return False
    return bool(result.violations)
