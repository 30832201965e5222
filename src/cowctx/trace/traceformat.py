"""Reading and writing trace files: gzip'd JSON lines, a header then one record a line.

The schema is docs/trace-format.md (``format: cowctx-trace``, ``version: 1``).  Errors
name the file, the line and the field; the CLI turns them into exit status 2.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

from cowctx.trace.events import Record, Recording, validate

FORMAT = "cowctx-trace"
VERSION = 1
HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "command": list,
    "kernel": str,
    "aslr": bool,
    "root_pid": int,
    "events": int,
    "lost_events": dict,
    "flags": list,
    "special_mappings": list,
    "images": dict,
}


class TraceFormatError(ValueError):
    """A trace file that does not follow the schema."""


def write(path: Path, rec: Recording) -> None:
    """Write ``rec`` to ``path`` (whole or not at all; byte-identical for equal input)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write((json.dumps(rec.header, sort_keys=True) + "\n").encode())
        for r in rec.records:
            gz.write((json.dumps(r, separators=(",", ":")) + "\n").encode())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> Recording:
    """Read and validate a trace file."""
    try:
        with gzip.open(path, "rt") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: not a gzip'd trace file: {exc}") from None
    if not lines:
        raise TraceFormatError(f"{path}: empty")
    header = _json(path, 1, lines[0])
    check_header(path, header)
    records: list[Record] = []
    for i, line in enumerate(lines[1:], start=2):
        r = _json(path, i, line)
        why = validate(r, f"{path}:{i}")
        if why is not None:
            raise TraceFormatError(why)
        records.append(r)
    if header["events"] != len(records):
        raise TraceFormatError(
            f"{path}:1: header field 'events' says {header['events']}, file has {len(records)}"
        )
    return Recording(header, records)


def _json(path: Path, lineno: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{path}:{lineno}: not JSON: {exc}") from None


def check_header(path: Path, header: Any) -> None:
    if not isinstance(header, dict):
        raise TraceFormatError(f"{path}:1: the header must be an object")
    if header.get("format") != FORMAT:
        raise TraceFormatError(f"{path}:1: field 'format' must be {FORMAT!r}")
    if header.get("version") != VERSION:
        raise TraceFormatError(
            f"{path}:1: field 'version' is {header.get('version')!r}; this cowctx reads {VERSION}"
        )
    for name, kind in HEADER_FIELDS.items():
        if name not in header:
            raise TraceFormatError(f"{path}:1: header field {name!r} is missing")
        if not isinstance(header[name], kind) or (kind is int and isinstance(header[name], bool)):
            raise TraceFormatError(f"{path}:1: header field {name!r} has the wrong type")
    for name, image in header["images"].items():
        if not isinstance(image, dict):
            raise TraceFormatError(f"{path}:1: images[{name!r}] must be an object")
        if "loads" in image:
            for seg in image["loads"]:
                if not (
                    isinstance(seg, list) and len(seg) == 6 and all(isinstance(x, int) for x in seg)
                ):
                    raise TraceFormatError(
                        f"{path}:1: images[{name!r}].loads entries are 6 integers"
                    )
