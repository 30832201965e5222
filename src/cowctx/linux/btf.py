"""Read the running kernel's BTF (/sys/kernel/btf/vmlinux): struct layouts, enum values, ids.

The BPF peek program (bpf.py) and the graph reader (graph.py) take every offset, every helper
number and the iterator's attach id from here at run time, so nothing is tied to one build of
the kernel.  Only what they need is decoded: structs and unions (with anonymous members
searched through, as C lets ``vma->vm_start`` name a member of an anonymous union), enums,
typedef/qualifier chains and named functions.  Format: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

_EXTRA = {
    KIND_INT: lambda vlen: 4,
    KIND_ARRAY: lambda vlen: 12,
    KIND_STRUCT: lambda vlen: 12 * vlen,
    KIND_UNION: lambda vlen: 12 * vlen,
    KIND_ENUM: lambda vlen: 8 * vlen,
    KIND_FUNC_PROTO: lambda vlen: 8 * vlen,
    KIND_VAR: lambda vlen: 4,
    KIND_DATASEC: lambda vlen: 12 * vlen,
    KIND_DECL_TAG: lambda vlen: 4,
    KIND_ENUM64: lambda vlen: 12 * vlen,
}
_SKIP = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(RuntimeError):
    """The BTF is missing, malformed, or lacks a type or member the referee needs."""


@dataclass(frozen=True, slots=True)
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    """``size`` for structs, unions, enums, ints; ``type`` for pointers, typedefs, funcs."""
    members: tuple[tuple[str, int, int], ...]
    """Struct/union members (name, type id, bit offset); enum values as (name, 0, value)."""


class Btf:
    """One parsed BTF blob (normally the kernel's own)."""

    def __init__(self, data: bytes, where: str = "BTF") -> None:
        self.where = where
        if len(data) < 24:
            raise BtfError(f"{where}: too short for a BTF header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{where}: bad magic {magic:#x} (big-endian BTF is not supported)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[BtfType | None] = [None]  # type id 0 is void
        self.by_name: dict[tuple[int, str], list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len

        def name_at(off: int) -> str:
            stop = strings.index(b"\0", off)
            return strings[off:stop].decode()

        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (KIND_STRUCT, KIND_UNION):
                out = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                    bit = m_off & 0xFFFFFF if kflag else m_off
                    out.append((name_at(m_name), m_type, bit))
                members = tuple(out)
            elif kind == KIND_ENUM:
                members = tuple(
                    (name_at(n), 0, v)
                    for n, v in (struct.unpack_from("<Ii", data, pos + 8 * i) for i in range(vlen))
                )
            elif kind not in _EXTRA and kind not in (
                KIND_PTR,
                KIND_FWD,
                KIND_FUNC,
                KIND_FLOAT,
                *_SKIP,
            ):
                raise BtfError(f"{where}: unknown BTF kind {kind} (type {len(self.types)})")
            pos += _EXTRA.get(kind, lambda vlen: 0)(vlen)
            t = BtfType(len(self.types), kind, name_at(name_off), size_or_type, members)
            self.types.append(t)
            if t.name:
                self.by_name.setdefault((kind, t.name), []).append(t.id)

    def find(self, kind: int, name: str) -> BtfType:
        ids = self.by_name.get((kind, name))
        if not ids:
            raise BtfError(f"{self.where}: no {_KIND_NAMES.get(kind, kind)} {name!r}")
        t = self.types[ids[0]]
        assert t is not None
        return t

    def resolve(self, type_id: int) -> BtfType | None:
        """Follow typedefs and qualifiers; None for void."""
        t = self.types[type_id]
        while t is not None and t.kind in _SKIP:
            t = self.types[t.size_or_type]
        return t

    def sizeof(self, name: str) -> int:
        """``sizeof(struct name)``."""
        return self.find(KIND_STRUCT, name).size_or_type

    def offsetof(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` (``a.b`` for nested, anonymous members searched)."""
        t = self.find(KIND_STRUCT, struct_name)
        total = 0
        for part in member.split("."):
            found = self._member(t, part)
            if found is None:
                raise BtfError(f"{self.where}: struct {struct_name} has no member {member!r}")
            bit, type_id = found
            if bit % 8:
                raise BtfError(f"{self.where}: {struct_name}.{member} is a bit field")
            total += bit // 8
            nxt = self.resolve(type_id)
            if nxt is None:
                raise BtfError(f"{self.where}: {struct_name}.{member} has type void")
            t = nxt
        return total

    def _member(self, t: BtfType, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of ``name`` in struct/union ``t``, searching anonymous
        members breadth-last as C does."""
        for m_name, m_type, bit in t.members:
            if m_name == name:
                return bit, m_type
        for m_name, m_type, bit in t.members:
            inner = self.resolve(m_type)
            if not m_name and inner is not None and inner.kind in (KIND_STRUCT, KIND_UNION):
                found = self._member(inner, name)
                if found is not None:
                    return bit + found[0], found[1]
        return None

    def enum_value(self, enum_name: str, value_name: str) -> int:
        t = self.find(KIND_ENUM, enum_name)
        for n, _, v in t.members:
            if n == value_name:
                return v
        raise BtfError(f"{self.where}: enum {enum_name} has no {value_name}")

    def func_id(self, name: str) -> int:
        """The type id of function ``name`` (what BPF_PROG_LOAD's attach_btf_id wants)."""
        return self.find(KIND_FUNC, name).id


_KIND_NAMES = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_ENUM: "enum", KIND_FUNC: "func"}


@cache
def vmlinux_btf() -> Btf:
    """The running kernel's BTF, parsed once per process."""
    try:
        data = VMLINUX.read_bytes()
    except OSError as exc:
        raise BtfError(f"cannot read {VMLINUX}: {exc.strerror} (kernel without BTF?)") from exc
    return Btf(data, str(VMLINUX))
