"""The maintainer scripts and benchmarks (not imported by any test) at least load and print their usage."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for d in ("scripts", "bench") for p in (ROOT / d).glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_compiles(path):
    compile(path.read_text(), str(path), "exec")
    assert path.stat().st_size < 200_000, "a script this large is almost certainly a botched edit"


def test_catalog_script_prints_usage():
    run = subprocess.run([sys.executable, "-P", str(ROOT / "scripts" / "catalog.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.startswith("usage: catalog.py"), run.stderr
