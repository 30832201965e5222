"""Real programs: record what a program tree does to its address spaces (``record``),
and replay it as machine operations on every design (``replay``).

See docs/record-replay.md and docs/trace-format.md.
"""
