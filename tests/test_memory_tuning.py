"""The CLI's allocator settings (zeekml/runtime/memory.py): applied on glibc, and never
over a setting the user made in the environment."""

from __future__ import annotations

import platform

import pytest

from zeekml.runtime import memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt exists on glibc Linux only")
def test_glibc_settings_applied_unless_the_user_set_malloc_variables(monkeypatch) -> None:
    for name in [k for k in memory.os.environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    assert memory.tune_for_batches() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert memory.tune_for_batches() is False


def test_numpy_huge_page_advice_is_left_to_the_user_variable(monkeypatch) -> None:
    calls: list[bool] = []
    multiarray = memory.np._core.multiarray
    monkeypatch.setattr(multiarray, "_set_madvise_hugepage", calls.append, raising=False)
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    memory.tune_for_batches()
    assert calls == []
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE")
    memory.tune_for_batches()
    assert calls == [False]
