"""``cowctx contend``: the model's operations on N simulated CPUs, with timed steps
and kernel lock semantics (SimPy), and the cost model calibrated on this kernel.

Modules: :mod:`.costs` (cost model, classes of steps), :mod:`.locks` (rwsem,
mutex, spinlock semantics), :mod:`.hooks` (the runtime hook interface, counting),
:mod:`.sim` (the simulator), :mod:`.drivers` (workloads and background walkers as
per-CPU loops), :mod:`.stats` (what is measured), :mod:`.fit` (least squares),
:mod:`.run` (designs x CPU counts), :mod:`.perfetto` (trace-event file).
"""
