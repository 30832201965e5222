"""Build the C worker on first use with the machine's gcc, cached by a hash of source+flags.

The worker is shipped as source (a binary would be tied to one libc-free toolchain anyway):
it is compiled once per source version into $XDG_CACHE_HOME/cowctx (or ~/.cache/cowctx).
The result is checked to have no writable loadable segment: a writable segment would be a
private file mapping that the first write turns anonymous, with an anon_vma of its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("worker.c")

CFLAGS: tuple[str, ...] = (
    "-O2",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",  # no memset() call inside memset()
    "-fno-stack-protector",  # no TLS: %fs is 0
    "-fno-pie",
    "-no-pie",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fcf-protection=none",
    "-mgeneral-regs-only",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",
    "-Wl,-z,noexecstack",
    "-Wl,-z,norelro",
)

PT_LOAD = 1
PF_W = 2


class BuildError(RuntimeError):
    """The worker could not be built (no gcc, compiler error, unexpected ELF layout)."""


def cache_dir() -> Path:
    """Where built workers live: $XDG_CACHE_HOME/cowctx, else ~/.cache/cowctx."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cowctx"


def source_hash() -> str:
    """Key of the cached binary: the source text and the compiler flags."""
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update("\0".join(CFLAGS).encode())
    return h.hexdigest()[:20]


def writable_load_segments(path: Path) -> list[int]:
    """Indexes of PT_LOAD program headers with PF_W in a 64-bit little-endian ELF."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{path}: not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    bad = []
    for i in range(phnum):
        p_type, p_flags = struct.unpack_from("<II", data, phoff + i * phentsize)
        if p_type == PT_LOAD and p_flags & PF_W:
            bad.append(i)
    return bad


def ensure_worker() -> Path:
    """Return the path of the built worker, compiling it if this source was never built."""
    target = cache_dir() / f"worker-{source_hash()}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found on PATH: cannot build the kernel worker")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "worker"
        proc = subprocess.run(
            [gcc, *CFLAGS, "-o", str(out), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"gcc failed building {SOURCE.name}:\n{proc.stderr.strip()}")
        bad = writable_load_segments(out)
        if bad:
            raise BuildError(
                f"built worker has writable PT_LOAD segments {bad}: it would own anonymous memory"
            )
        os.chmod(out, 0o755)
        os.replace(out, target)  # atomic: concurrent builders agree on the result
    return target
