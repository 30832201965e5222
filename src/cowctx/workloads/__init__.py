"""Workloads: parameterised, deterministic generators of SCENARIO.md steps that
stand for real process shapes, sized like the real thing by default.  Every
workload is kernel-capable (no model-only step), so the kernel can run it too."""

from cowctx.workloads.registry import WORKLOADS, Workload, WorkloadParamError, build_workload

__all__ = ["WORKLOADS", "Workload", "WorkloadParamError", "build_workload"]
