"""The machine room's pieces: part-scoped workspaces and memory settings."""
import platform
import sys

import numpy as np

from convtrain.runtime.memory import keep_freed_memory
from convtrain.runtime.workspace import Workspace, scratch_or


def test_a_part_scope_keeps_its_buffers_apart_from_the_others_and_reuses_them():
    ws = Workspace()
    a = ws.part(0).get("cols", (2, 3), np.float32)
    b = ws.part(1).get("cols", (2, 3), np.float32)
    whole = ws.get("cols", (2, 3), np.float32)
    a[...], b[...], whole[...] = 1, 2, 3
    assert (a == 1).all() and (b == 2).all()  # three distinct buffers under one name
    assert ws.nbytes == 3 * 6 * 4
    again = ws.part(0).get("cols", (1, 3), np.float32)
    assert np.shares_memory(again, a)  # the part's buffer is reused, not reallocated
    view, fresh = ws.part(1).get_marked("x_padded", (2, 2), np.float64, np, "layout")
    assert fresh and not ws.part(1).get_marked("x_padded", (2, 2), np.float64, np, "layout")[1]
    assert ws.part(0).get_marked("x_padded", (2, 2), np.float64, np, "layout")[1]
    nested = ws.part(0).part(1).get("cols", (2, 3), np.float32)
    assert not np.shares_memory(nested, a) and not np.shares_memory(nested, b)


def test_throw_away_scratch_parts_are_throw_away_too():
    scratch = scratch_or(None)
    assert scratch.part(3) is scratch
    first = scratch.part(0).get("cols", (2, 2), np.float32)
    assert not np.shares_memory(first, scratch.part(0).get("cols", (2, 2), np.float32))


def test_keep_freed_memory_applies_on_glibc_linux():
    # the same settings every training run applies (engine.keep_freed_memory, default true)
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc
