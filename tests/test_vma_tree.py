"""The mm's VMA tree (mm_types.VmaTree, the maple tree's role) against a plain
dict with its keys sorted at every look-up: the same answers to every operation
the model uses, over a seeded random mix of stores, erases and look-ups."""

from __future__ import annotations

import bisect
import random

import pytest

from cowctx.mm.mm_types import VmaTree


class _Naive:
    def __init__(self) -> None:
        self.d: dict[int, object] = {}

    def keys(self) -> list[int]:
        return sorted(self.d)


def _agree(tree: VmaTree, ref: _Naive, probes: list[int]) -> None:
    keys = ref.keys()
    assert len(tree) == len(keys)
    assert tree.values() == [ref.d[k] for k in keys]
    for i in range(len(keys)):
        assert tree.peekitem(i) == (keys[i], ref.d[keys[i]])
        assert tree.peekitem(i - len(keys)) == (keys[i], ref.d[keys[i]])
    for k in probes:
        assert tree.bisect_left(k) == bisect.bisect_left(keys, k)
        assert tree.bisect_right(k) == bisect.bisect_right(keys, k)
        assert tree.get(k) is ref.d.get(k)


def _exercise(tree: VmaTree, seed: int) -> None:
    rng = random.Random(seed)
    ref = _Naive()
    for _ in range(400):
        k = rng.randrange(0, 64) * 0x1000
        if rng.random() < 0.6:
            v = object()
            tree[k] = v  # type: ignore[assignment]
            ref.d[k] = v
        elif k in ref.d:
            del tree[k]
            del ref.d[k]
        else:
            with pytest.raises(KeyError):
                del tree[k]
        _agree(tree, ref, [k - 1, k, k + 1, 0, 64 * 0x1000])


@pytest.mark.parametrize("seed", range(5))
def test_vma_tree_is_a_sorted_map(seed: int) -> None:
    _exercise(VmaTree(), seed)


def test_a_tree_that_loses_order_is_caught() -> None:
    class Appends(VmaTree):
        def __setitem__(self, key: int, vma: object) -> None:
            if key not in self._map:
                self._keys.append(key)  # not in order
            self._map[key] = vma  # type: ignore[assignment]

    with pytest.raises(AssertionError):
        _exercise(Appends(), 0)
