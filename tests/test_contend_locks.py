"""The simulator's locks: rwsem writer preference, try-lock failure, hand-off,
readers woken together; a checker of those rules, and broken locks it catches."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cowctx.concurrency.locks import KINDS
from cowctx.contend.locks import SimLock, Waiter


def rwsem_problems(make: Callable[[], SimLock]) -> list[str]:
    """What ``make()``'s locks get wrong about the kernel's rwsem."""
    problems = []
    lk = make()
    lk.take(1, "read")
    if not lk.can_take("read"):
        problems.append("a second reader is kept out of a reader-held rwsem")
    if lk.can_take("write"):
        problems.append("a writer gets a reader-held rwsem")
    lk.waiters.append(Waiter(2, "write", 0))
    if lk.can_take("read"):
        problems.append("a new reader passes a waiting writer (no writer preference)")
    lk.waiters.append(Waiter(3, "read", 0))
    granted = lk.release(1, "read")
    if [w.tid for w in granted] != [2] or lk.writer != 2:
        problems.append(f"release did not hand the lock to the waiting writer: {granted}")
        return problems
    if lk.can_take("read"):
        problems.append("down_read_trylock succeeds while a writer holds the rwsem")
    lk.waiters.appendleft(Waiter(4, "read", 0))
    lk.waiters.append(Waiter(5, "write", 0))
    lk.waiters.append(Waiter(6, "read", 0))
    granted = lk.release(2, "write")
    if sorted(w.tid for w in granted) != [3, 4, 6]:
        problems.append(f"readers not woken together past a writer: {[w.tid for w in granted]}")
    if [w.tid for w in lk.waiters] != [5]:
        problems.append("the queued writer did not stay queued")
    return problems


def test_the_rwsem_has_kernel_semantics() -> None:
    assert rwsem_problems(lambda: SimLock(KINDS["anon_vma"])) == []


class _NoPreference(SimLock):
    def can_take(self, mode: str) -> bool:
        return self.free_for(mode)  # ignores the waiters


class _NoHandOff(SimLock):
    def hand_off(self, now: int = 0) -> list[Waiter]:
        return []


class _OneReaderAtATime(SimLock):
    def hand_off(self, now: int = 0) -> list[Waiter]:
        if self.waiters and self.waiters[0].mode == "read" and not self.writer and not self.readers:
            w = self.waiters.popleft()
            self.take(w.tid, "read")
            return [w]
        return super().hand_off(now)


@pytest.mark.parametrize(
    ("broken", "expect"),
    [
        (_NoPreference, "writer preference"),
        (_NoHandOff, "hand the lock"),
        (_OneReaderAtATime, "readers not woken together"),
    ],
)
def test_the_checker_catches_broken_locks(broken: type[SimLock], expect: str) -> None:
    problems = rwsem_problems(lambda: broken(KINDS["anon_vma"]))
    assert any(expect in p for p in problems), problems


def test_trylock_fails_while_held_or_waited_for() -> None:
    lk = SimLock(KINDS["anon_vma"])
    assert lk.can_take("write")
    lk.take(1, "write")
    assert not lk.can_take("read") and not lk.can_take("write")
    lk.release(1, "write")
    lk.take(1, "read")
    assert lk.can_take("read")
    lk.waiters.append(Waiter(2, "write", 0))
    assert not lk.can_take("read"), "RWSEM_FLAG_WAITERS makes down_read_trylock fail"


def test_spinlocks_are_exclusive_fifo() -> None:
    lk = SimLock(KINDS["ptl"])
    lk.take(1, "write")
    lk.waiters.extend([Waiter(2, "write", 0), Waiter(3, "write", 0)])
    assert [w.tid for w in lk.release(1, "write")] == [2]
    assert [w.tid for w in lk.release(2, "write")] == [3]
    assert lk.release(3, "write") == [] and lk.idle()


def test_releasing_a_lock_not_held_is_an_error() -> None:
    lk = SimLock(KINDS["anon_vma"])
    lk.take(1, "read")
    with pytest.raises(ValueError, match="read hold"):
        lk.release(2, "read")
    with pytest.raises(ValueError, match="does not hold"):
        lk.release(1, "write")


def test_a_spinning_writer_steals_from_a_sleeping_head_until_handoff() -> None:
    from cowctx.contend.locks import HANDOFF_NS

    lk = SimLock(KINDS["anon_vma"])
    lk.take(1, "write")
    lk.waiters.extend([Waiter(2, "write", 0), Waiter(3, "write", 0, spinning=True)])
    assert [w.tid for w in lk.release(1, "write", now=1000)] == [3]
    assert [w.tid for w in lk.waiters] == [2]
    lk.waiters.append(Waiter(4, "write", 0, spinning=True))
    # the head has waited past RWSEM_WAIT_TIMEOUT: the lock is handed to it
    assert [w.tid for w in lk.release(3, "write", now=HANDOFF_NS)] == [2]
