"""The ``cowctx-scenario/1`` file format as typed, validated models.

../shared/SCENARIO.md is the contract; this module is its executable form.
Extensions are compatible additions only (see docs/scenario-format.md).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT = "cowctx-scenario/1"
WINDOW_BASE = 0x2000_0000_0000
"""Virtual address of page 0 of the scenario window."""
WINDOW_PAGES = (1 << 30) >> 12
"""The window is 1 GiB: page numbers run from 0 to WINDOW_PAGES - 1."""

Prot = Literal["none", "r", "rw", "rx", "rwx"]
Advice = Literal[
    "dontneed",
    "free",
    "dontfork",
    "dofork",
    "wipeonfork",
    "keeponfork",
    "mergeable",
    "unmergeable",
    "hugepage",
    "nohugepage",
    "cold",
    "pageout",
]
Errno = Annotated[str, Field(pattern=r"^(E[A-Z0-9]+|SIGSEGV|SIGBUS)$")]
ProcName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]

PageNo = Annotated[int, Field(ge=0, lt=WINDOW_PAGES)]
Length = Annotated[int, Field(ge=0, le=WINDOW_PAGES)]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    proc: ProcName = "p0"
    errno: Errno | None = None

    MODEL_ONLY: ClassVar[bool] = False
    """True for ops the kernel cannot run: kernel-diff refuses files that use them."""


class _Range(_Step):
    page: PageNo
    pages: Length

    @model_validator(mode="after")
    def _inside_window(self):
        if self.page + self.pages > WINDOW_PAGES:
            raise ValueError(
                f"range [{self.page}, {self.page + self.pages}) leaves the 1 GiB window"
            )
        return self


class MmapStep(_Range):
    op: Literal["mmap"]
    prot: Prot = "rw"
    file: str | None = None
    file_page: Annotated[int, Field(ge=0)] = 0
    shared: bool = False
    flags: list[Literal["noreserve", "populate"]] = []


class MunmapStep(_Range):
    op: Literal["munmap"]


class MprotectStep(_Range):
    op: Literal["mprotect"]
    prot: Prot


class MremapStep(_Range):
    op: Literal["mremap"]
    new_pages: Length
    new_page: PageNo | None = None
    flags: list[Literal["maymove", "fixed", "dontunmap"]] = []

    @model_validator(mode="after")
    def _new_page_with_fixed(self):
        fixed = "fixed" in self.flags
        if fixed and self.new_page is None:
            raise ValueError("flag 'fixed' needs field 'new_page'")
        if not fixed and self.new_page is not None:
            raise ValueError("field 'new_page' is only meaningful with flag 'fixed'")
        if self.new_page is not None and self.new_page + self.new_pages > WINDOW_PAGES:
            raise ValueError("the new range leaves the 1 GiB window")
        return self


class MadviseStep(_Range):
    op: Literal["madvise"]
    advice: Advice


class ReadStep(_Range):
    op: Literal["read"]
    pages: Length = 1


class WriteStep(_Range):
    op: Literal["write"]
    pages: Length = 1
    value: Annotated[int, Field(ge=0, le=255)] | None = None


class ForkStep(_Step):
    op: Literal["fork"]
    child: ProcName


class ExitStep(_Step):
    op: Literal["exit"]


class ExecStep(_Step):
    """Extension: execve() of the same program; the process gets a fresh mm."""

    op: Literal["exec"]


class KsmStep(_Step):
    op: Literal["ksm"]
    MODEL_ONLY: ClassVar[bool] = True


class ClientStep(_Step):
    op: Literal["migrate", "reclaim", "referenced"]
    page: PageNo
    MODEL_ONLY: ClassVar[bool] = True


Step = Annotated[
    MmapStep
    | MunmapStep
    | MprotectStep
    | MremapStep
    | MadviseStep
    | ReadStep
    | WriteStep
    | ForkStep
    | ExitStep
    | ExecStep
    | KsmStep
    | ClientStep,
    Field(discriminator="op"),
]


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pages: Annotated[int, Field(ge=1, le=WINDOW_PAGES)]


class ObjectCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    live: Annotated[int, Field(ge=0)] | None = None
    allocated: Annotated[int, Field(ge=0)] | None = None
    freed: Annotated[int, Field(ge=0)] | None = None


MapLine = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], str]


Maps = dict[ProcName, list[MapLine]]


def _check_maps(maps: Maps | None) -> Maps | None:
    for proc, lines in (maps or {}).items():
        for start, end, perms in lines:
            if not re.fullmatch(r"[r-][w-][x-][ps]", perms):
                raise ValueError(f"{proc}: perms {perms!r} is not like 'rw-p'")
            if end <= start:
                raise ValueError(f"{proc}: map line [{start}, {end}) is empty")
    return maps


class Expect(BaseModel):
    """What `cowctx run` checks at the end.  Object kinds a design lacks are
    checked only on designs that have them (anon_vma counts on `anon_vma`).

    ``maps`` is Linux's layout, so it is checked on ``anon_vma``; a design whose
    merge rules differ gets its own layout in ``design_maps`` (extension).
    ``violations`` (extension) names, per design, the oracle violation kinds the
    scenario must produce there; every other design must produce none."""

    model_config = ConfigDict(extra="allow", frozen=True)
    maps: Maps | None = None
    design_maps: dict[str, Maps] = {}
    violations: dict[str, list[str]] = {}

    @field_validator("maps")
    @classmethod
    def _perms(cls, maps):
        return _check_maps(maps)

    @field_validator("design_maps")
    @classmethod
    def _design_perms(cls, design_maps):
        for maps in design_maps.values():
            _check_maps(maps)
        return design_maps

    def object_counts(self) -> dict[str, ObjectCounts]:
        """The expected objects per kind (every extra key except `maps`)."""
        extra = self.model_extra or {}
        return {kind: ObjectCounts.model_validate(v) for kind, v in extra.items()}

    @model_validator(mode="after")
    def _known_names(self):
        """A misspelt kind or design would otherwise be checked on no design at all."""
        from cowctx.designs import known_design, object_kind_names
        from cowctx.oracle.oracle import VIOLATION_KINDS

        kinds = object_kind_names()
        for kind in self.model_extra or {}:
            if kind not in kinds:
                raise ValueError(
                    f"field 'expect.{kind}': unknown object kind (known: {', '.join(kinds)})"
                )
        self.object_counts()
        for block, names in (("design_maps", self.design_maps), ("violations", self.violations)):
            for design in names:
                why = known_design(design)
                if why is not None:
                    raise ValueError(f"field 'expect.{block}.{design}': unknown design ({why})")
        for design, vkinds in self.violations.items():
            for kind in vkinds:
                if kind not in VIOLATION_KINDS:
                    raise ValueError(
                        f"field 'expect.violations.{design}': unknown violation kind {kind!r} "
                        f"(known: {', '.join(sorted(VIOLATION_KINDS))})"
                    )
        return self


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["cowctx-scenario/1"]
    name: Annotated[str, Field(pattern=r"^[a-z0-9._-]+$")]
    description: str | None = None
    files: dict[str, FileSpec] = {}
    steps: list[Step]
    threads: dict[ProcName, list[Step]] = {}
    """Extension (docs/scenario-format.md): after ``steps`` (the set-up, run one at
    a time), each named thread runs its own steps concurrently with the others;
    only ``cowctx explore`` runs them."""
    expect: Expect | None = None

    @model_validator(mode="after")
    def _processes_and_files(self):
        alive = {"p0"}
        known = {"p0"}
        self._check_steps(self.steps, alive, known, "")
        forked: set[str] = set()
        for name, steps in self.threads.items():
            t_alive, t_known = set(alive), set(known) | forked
            self._check_steps(steps, t_alive, t_known, f"thread {name!r} ")
            forked |= t_known - known
        return self

    def _check_steps(self, steps: list, alive: set[str], known: set[str], prefix: str) -> None:
        """Processes exist when used and names are new when forked.  A thread sees
        the processes alive after the set-up and those it forks itself."""
        for i, step in enumerate(steps):
            where = f"{prefix}step {i} ({step.op})"
            if step.proc not in alive:
                why = "has exited" if step.proc in known else "does not exist yet"
                raise ValueError(f"{where}: field 'proc': process {step.proc!r} {why}")
            if isinstance(step, ForkStep):
                if step.child in known:
                    raise ValueError(f"{where}: field 'child': name {step.child!r} is already used")
                alive.add(step.child)
                known.add(step.child)
            elif isinstance(step, ExitStep):
                alive.discard(step.proc)
            elif (
                isinstance(step, MmapStep) and step.file is not None and step.file not in self.files
            ):
                raise ValueError(f"{where}: field 'file': no file {step.file!r} in 'files'")

    @property
    def model_only_steps(self) -> list[int]:
        return [i for i, s in enumerate(self.steps) if s.MODEL_ONLY]
