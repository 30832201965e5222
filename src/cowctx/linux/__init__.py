"""Run scenarios on the real running Linux kernel and observe exactly what it did.

`run_on_kernel` returns the SCENARIO.md result object with design ``linux``;
`kernel_unavailable_reason` says why this machine cannot do that (None when it can).
"""

from cowctx.linux.executor import (
    KernelRunError,
    KernelSession,
    KernelUnavailable,
    ModelOnlyStep,
    kernel_unavailable_reason,
    run_on_kernel,
)

__all__ = [
    "KernelRunError",
    "KernelSession",
    "KernelUnavailable",
    "ModelOnlyStep",
    "kernel_unavailable_reason",
    "run_on_kernel",
]
