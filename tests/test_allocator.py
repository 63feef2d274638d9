"""The allocator setting the CLI, jobs and flows make: freed memory is reused, not faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from streamcosal.inference.allocator import keep_freed_memory

FAULTS = """
import json, resource
import numpy as np
from streamcosal.inference.allocator import keep_freed_memory

def faults_of_a_second_64_mib_array() -> int:
    np.ones(2 ** 23).sum()  # 64 MiB, allocated, touched and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(2 ** 23).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_a_second_64_mib_array()
kept = keep_freed_memory()
print(json.dumps({"default": default, "kept": kept, "after": faults_of_a_second_64_mib_array()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is changed")
def test_keeping_freed_memory_reuses_pages_instead_of_faulting_them_in() -> None:
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True)
    faults = json.loads(out.stdout)
    # 64 MiB is over glibc's largest mmap threshold (32 MiB): by default every such array is a fresh mapping,
    # at least 32 faults (2 MiB huge pages; 16,384 of 4 KiB); kept, the freed array's pages are reused
    assert faults["kept"] and faults["default"] >= 32 > 8 > faults["after"], faults


def test_an_owner_who_set_glibcs_variables_keeps_their_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
