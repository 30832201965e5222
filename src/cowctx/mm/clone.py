"""``copy_process()`` with CLONE_VM: a task that shares its parent's mm (vfork,
threads).  Without CLONE_VM, :meth:`~cowctx.mm.machine.Machine.fork` applies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowctx.mm.mm_types import TaskStruct

if TYPE_CHECKING:
    from cowctx.mm.machine import Machine


def clone_vm(m: Machine, parent: TaskStruct, comm: str) -> TaskStruct:
    """``copy_mm()`` with CLONE_VM: ``mmget()`` of the parent's mm, nothing copied;
    the mm goes when its last user exits or execs (``mmput``)."""
    assert parent.mm is not None and not parent.exit_state
    pid = m.alloc_pid()
    child = TaskStruct(pid, comm, parent.mm, parent)
    parent.mm.mm_users += 1
    parent.children.append(child)
    m.tasks[pid] = child
    return child
