"""The C worker is built on first use, cached by source hash, and owns no writable segment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cowctx.linux import build

from .conftest import skip_or_fail


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("gcc") is None:
        skip_or_fail("gcc not found on PATH: cannot build the kernel worker")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "cowctx"


def test_built_once_and_cached_by_source_hash(cache: Path) -> None:
    path = build.ensure_worker()
    assert path.parent == cache and path.name == f"worker-{build.source_hash()}"
    mtime = path.stat().st_mtime_ns
    assert build.ensure_worker() == path and path.stat().st_mtime_ns == mtime


def test_worker_has_no_writable_load_segment(cache: Path) -> None:
    assert build.writable_load_segments(build.ensure_worker()) == []


def test_source_change_means_new_binary(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build.ensure_worker()
    src = cache.parent / "worker.c"
    src.write_text(build.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(build, "SOURCE", src)
    second = build.ensure_worker()
    assert second != first and second.is_file() and first.is_file()


def test_compiler_errors_are_reported(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = cache.parent / "worker.c"
    src.write_text("this is not C\n")
    monkeypatch.setattr(build, "SOURCE", src)
    with pytest.raises(build.BuildError, match="gcc failed"):
        build.ensure_worker()
