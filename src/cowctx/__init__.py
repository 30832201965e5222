"""cowctx: an executable model of Linux anonymous reverse mapping.

Two designs of the anonymous rmap run over one machine model: Linux 6.18's
``anon_vma``/``anon_vma_chain`` and the proposed CoW context.  Every rmap walk
can be checked against a brute-force oracle, and the ``anon_vma`` model against
the running kernel.
"""

__version__ = "0.1.0"
