"""Every bad command-line value stops at the option: one line on stderr, exit 2, never a silent default.

Each case ran to "internal error", was silently replaced by a default, or printed a multi-line usage
block before the options were validated (issue 18).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).parent / "runtime" / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("validation")
    (root / "a-file").write_text("not a directory")
    return {"model": tiny.write_tiny(root / "tiny"), "file": root / "a-file", "tmp": root,
            "home": root / "home"}


def zoo(args: list, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, env=env, timeout=300)


CASES = [
    ["run", "{model}", "hi", "-n", "2", "--threads", "0"],
    ["run", "{model}", "hi", "-n", "2", "--ctx", "0"],
    ["run", "{model}", "hi", "-n", "2", "--ctx", "-5"],
    ["run", "{model}", "hi", "-n", "2", "--seed", "-1"],
    ["run", "{model}", "hi", "-n", "2", "--temperature", "nan"],
    ["run", "{model}", "hi", "-n", "2", "--temperature", "inf"],
    ["run", "{model}", "hi", "-n", "2", "--repeat-penalty", "nan"],
    ["run", "{model}", "hi", "-n", "2", "--top-k", "-1"],
    ["run", "{model}", b"\xff\xfe not utf-8", "-n", "2"],
    ["run", "{model}", "hi", "-n", "2", "--system", b"\xc3\x28"],
    ["run"],
    ["bench", "{model}", "--threads", "0", "--prompt-tokens", "4", "--gen-tokens", "2"],
    ["bench", "{model}", "--prompt-tokens", "0", "--gen-tokens", "2"],
    ["convert", "{model}", "-o", "{tmp}/c", "--encoding", "q8", "--group-size", "0"],
    ["convert", "{model}", "-o", "{file}/sub"],
    ["compress", "{model}", "-o", "{tmp}/o", "--bits", "8", "--group-size", "0", "--samples", "2", "--seq-len", "16",
     "--no-eval"],
    ["compress", "{model}", "-o", "{file}/sub", "--samples", "2", "--seq-len", "16", "--no-eval"],
    ["compress", "{model}", "-o", "{tmp}/o", "--seed", "-1", "--samples", "2", "--seq-len", "16", "--no-eval"],
    ["compress", "{model}", "-o", "{tmp}/o", "--ctx", "0", "--samples", "2", "--seq-len", "16"],
    ["sweep", "{model}", "-o", "{file}/x/y", "--sparsity", "0.5", "--bits", "8", "--samples", "2", "--seq-len", "16"],
    ["eval", "{model}", "--ctx", "0"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(map(str, a[2:] if len(a) > 2 else a)))
def test_bad_option_is_one_usage_line(paths, args):
    argv = [a if isinstance(a, bytes) else a.format(**paths) for a in args]
    proc = zoo(argv, paths["home"])
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zoo: error:"), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert not (paths["tmp"] / "o").exists() and not (paths["tmp"] / "c").exists()
