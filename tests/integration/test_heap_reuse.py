"""glibc heap reuse during CPU training, observed in a fresh process (so that no free block left
by earlier tests can hold the test's blocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from encoder.heap import _glibc

_HEAP_SCRIPT = """
import ctypes, json
import torch
from encoder.heap import heap_reuse
from tests.factories import mib_returned_on_freeing_64mib as returned

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_for(mib=512):
    # MiB glibc maps for an (untouched) tensor of that size: all of it when it may mmap, none from the heap
    before = libc.mallinfo2().hblkhd
    block = torch.empty(mib << 18)
    mapped = (libc.mallinfo2().hblkhd - before) >> 20
    del block
    return mapped

out = {"before": [returned(), mapped_for()]}
with heap_reuse(False) as applied:
    out["off"] = [applied, returned()]
with heap_reuse() as applied:
    out["on"] = [applied, returned(), mapped_for()]
    with heap_reuse():
        pass
    out["after_nested"] = [returned(), mapped_for()]
# larger than all the heap grew by above, so no free block of it can hold this one
out["after"] = mapped_for(4096)
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_heap_reuse_keeps_large_blocks_in_the_process():
    """Inside heap_reuse a freed 64 MiB block stays in the process (glibc would otherwise unmap it,
    to fault it back in on the next allocation); nested uses keep it on until the outermost ends;
    afterwards glibc maps (and unmaps) large blocks again. In a fresh process, so that no free block
    left by earlier tests can hold the test's blocks."""
    assert _glibc() is not None  # CI runs on glibc Linux: this test must not silently skip there
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", _HEAP_SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (
        out["before"][0] > 48
        and out["before"][1] >= 512
        and out["off"] == [False, out["off"][1]]
        and out["off"][1] > 48
    )
    assert out["on"] == [True, out["on"][1], 0] and out["on"][1] < 8
    assert out["after_nested"][0] < 8 and out["after_nested"][1] == 0
    assert out["after"] >= 4096  # large blocks are mapped (and unmapped on free) again
