"""zoo bench's busy-machine warning: /proc/stat arithmetic, the threshold, and a real busy process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.runtime.bench import busy_cpus, busy_warning, other_load


def test_busy_cpus_counts_everything_but_idle_and_iowait(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    before = "cpu  100 0 50 800 50 0 0 0 0 0"
    after = "cpu  150 0 100 850 50 0 0 0 0 0"  # +100 busy, +50 idle of +150
    assert busy_cpus(before, after) == pytest.approx(2 * 100 / 150)
    assert busy_cpus(before, before) == 0.0  # no ticks elapsed


def test_busy_warning_only_when_threads_do_not_fit():
    assert busy_warning(None, 2, 2) is None  # no /proc/stat
    assert busy_warning(0.1, 2, 2) is None
    assert busy_warning(1.0, 2, 1) is None  # one free core for one thread
    note = busy_warning(1.0, 2, 2)
    assert note is not None and "1.0 of 2 CPUs" in note and "--threads 1" in note


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="/proc/stat is Linux's")
def test_other_load_sees_a_spinning_process():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = other_load(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and busy >= 0.5  # the spinner holds (about) one core
