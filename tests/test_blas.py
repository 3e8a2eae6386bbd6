"""zoo pins OpenBLAS's kernel table before numpy loads, whatever table this CPU would get (zoo/blas.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zoo import blas

PROBE = "import zoo, numpy; from zoo.blas import architecture; print(architecture())"


def _probe(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(not blas._has_avx2_fma(), reason="the pinned kernels need an x86-64 CPU with AVX2 and FMA")
@pytest.mark.parametrize("preset", [None, "SkylakeX", "Sandybridge"])
def test_importing_zoo_first_pins_the_kernel_table(preset):
    """Unset or set to another table by the machine, a process that imports zoo runs the pinned one."""
    assert _probe({} if preset is None else {"OPENBLAS_CORETYPE": preset}) == blas.PINNED_ARCHITECTURE


def test_numpy_loaded_first_is_left_alone_and_a_mismatch_says_so():
    """pin() never changes a loaded BLAS; the build's mismatch hint then names the kernels that ran."""
    code = ("import numpy; import zoo; from zoo.blas import architecture, mismatch_hint, PINNED_ARCHITECTURE;"
            "a = architecture(); h = mismatch_hint();"
            "print('ok' if (a == PINNED_ARCHITECTURE) == (h == '') and (h == '' or a in h) else 'bad', a)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_CORETYPE"] = "Sandybridge" if blas._has_avx2_fma() else ""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    verdict, arch = proc.stdout.split()
    assert verdict == "ok"
    if blas._has_avx2_fma():
        assert arch == "Sandybridge"
