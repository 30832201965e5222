"""Concurrency: the model's operations as interleavable steps, and an explorer.

The machine model and the anon_vma design call the hooks of
:mod:`cowctx.concurrency.runtime` at every shared-memory access and
synchronisation point the kernel has there.  With no explorer running a hook is
one global load and a compare, so the sequential model is unchanged; under an
explorer each concurrent thread runs plain nested model calls in its own
greenlet and every hook is a point where the scheduler may switch threads.
"""
