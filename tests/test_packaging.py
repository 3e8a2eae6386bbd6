"""A wheel built from the repo installs in a fresh venv and imports zoo.format and zoo.kernels."""

import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_in_fresh_venv(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True)
    (wheel,) = (tmp_path / "dist").glob("zoo_llm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "zoo/format/SPEC.md" in names and "zoo/format/reader.py" in names and "zoo/kernels/__init__.py" in names
    assert "zoo/serve/page/index.html" in names and "zoo/serve/page/app.js" in names  # the catalog page
    assert not any(n.startswith(("format/", "kernels/", "tests/")) for n in names)

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    pins = [f"{d}=={metadata.version(d)}" for d in ("numpy", "numba", "llvmlite", "pyyaml", "safetensors")]
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), *pins], check=True)
    probe = (
        "import zoo.format as f, zoo.kernels as k, numpy as np\n"
        "t = f.encode(np.eye(3, 70, dtype=np.float32), 'sparse-q4', group_size=64)\n"
        "assert np.allclose(f.decode(t), np.eye(3, 70), atol=1e-3)\n"
        "print(f.__file__); print(k.__file__)\n"
    )
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    for line in out.splitlines():
        assert line.startswith(str(env)), line  # imported from the venv, not from the source tree
