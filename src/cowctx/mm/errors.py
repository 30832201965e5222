"""How a syscall or a memory access fails in the model."""

from __future__ import annotations


class SyscallError(Exception):
    """A syscall returned -errno.  ``errno`` is the name, e.g. ``"EINVAL"``."""

    def __init__(self, errno: str, why: str = "") -> None:
        super().__init__(f"{errno}{': ' + why if why else ''}")
        self.errno = errno
        self.why = why


class AccessFault(Exception):
    """A user access the kernel answers with a signal (``SIGSEGV`` or ``SIGBUS``).

    The process survives, as if it handled the signal; ``address`` is the
    faulting address and the pages before it were touched.
    """

    def __init__(self, signal: str, address: int, why: str = "") -> None:
        super().__init__(f"{signal} at {address:#x}{': ' + why if why else ''}")
        self.errno = signal
        self.address = address
        self.why = why
