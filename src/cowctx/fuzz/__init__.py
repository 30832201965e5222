"""Random scenarios, a fuzzer that runs them with the oracle on, and a shrinker
that turns a failing run into a short scenario file a kernel developer can read."""

from __future__ import annotations

from cowctx.fuzz.generate import FILES, generate_scenario, generate_steps
from cowctx.fuzz.runner import FuzzFailure, FuzzResult, fuzz
from cowctx.fuzz.shrink import scenario_yaml, shrink_steps

__all__ = [
    "FILES",
    "FuzzFailure",
    "FuzzResult",
    "fuzz",
    "generate_scenario",
    "generate_steps",
    "scenario_yaml",
    "shrink_steps",
]
