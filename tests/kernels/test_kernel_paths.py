"""Path selection, the ZOO_KERNELS override, input checking, artifacts, and the on-disk compile cache
(its key computed from the package's sources, kernels/jit.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from kernel_reference import encoded, float_bound, int8_activation_bound

import zoo.kernels as K
from zoo.errors import KernelError
from zoo.kernels import cpu as _cpu
from zoo.kernels import jit
from zoo.kernels.dispatch import matmul_kernel
from zoo.kernels.layout import Path as KernelPath

AVX2_ONLY = {"avx", "avx2", "fma", "f16c", "popcnt", "bmi2"}


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_path_choice_from_features():
    assert _cpu.supported_paths(set()) == ["portable"]
    assert _cpu.best_path(AVX2_ONLY) == "avx2"
    assert _cpu.best_path(AVX2_ONLY - {"bmi2"}) == "portable"  # the tile4-q4 staging uses pext
    assert _cpu.best_path(AVX2_ONLY | set(_cpu.NEEDS[KernelPath.AVX512])) == "avx512"
    with pytest.raises(KernelError, match="avx512vnni"):
        _cpu.check_path("avx512", AVX2_ONLY)
    with pytest.raises(KernelError, match="unknown kernel path"):
        K.set_path("sse9")
    assert "portable" in K.available_paths() and K.selected_path() in K.available_paths()


def test_env_override_is_read_at_import_and_refused_on_use():
    r = _run("import zoo.kernels as K; print(K.selected_path())", ZOO_KERNELS="portable")
    assert r.returncode == 0 and r.stdout.strip() == "portable", r.stderr
    code = ("import numpy as np, zoo.kernels as K\nfrom zoo.format import encode\nfrom zoo.errors import KernelError\n"
            "try:\n    K.linear(np.ones(64, np.float32), encode(np.ones((2, 64)), 'q4', group_size=64))\n"
            "except KernelError as e:\n    print('refused:', e)\n")
    r = _run(code, ZOO_KERNELS="neon")
    assert r.returncode == 0 and "refused: unknown kernel path 'neon'" in r.stdout, r.stderr


def test_source_stamp_covers_every_source_of_the_package(tmp_path):
    """The cache stamp of every kernel is a hash of all the package's .py files: an edit of any of them
    (an IR generator, a row body another file inlines) changes it, and restoring the file restores it."""
    copy = tmp_path / "kernels"
    shutil.copytree(jit.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert jit.source_stamp(copy) == jit.source_stamp() == jit._package_stamp()
    for name in ("ir/x86_rows.py", "decode_rows.py", "matvec/x86.py", "intrinsics.py"):
        original = (copy / name).read_text()
        (copy / name).write_text(original.replace("    return", "    return  ", 1))
        assert jit.source_stamp(copy) != jit.source_stamp(), name
        (copy / name).write_text(original)
    assert jit.source_stamp(copy) == jit.source_stamp()
    (copy / "matmul" / "new.py").write_text("X = 1\n")  # a new file counts too
    assert jit.source_stamp(copy) != jit.source_stamp()


def test_editing_an_inlined_source_recompiles_its_callers(tmp_path):
    """numba alone keys a cache to the function's own file; here a copy of the package (importable as
    `kcopy`, its own NUMBA_CACHE_DIR) shows the stamp at work: a kernel of matmul/csr.py that inlines
    intrinsics.f16_to_f32 loads from the cache in a second process, and compiles again after an edit of
    intrinsics.py alone."""
    shutil.copytree(jit.PACKAGE, tmp_path / "pkgs" / "kcopy", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import json, numpy as np\nfrom kcopy.matmul import csr\n"
            "cf = np.zeros(8, np.float32)\n"
            "csr._row_codes(np.full(4, 0x3c00, np.uint16), 0, 7, 4, cf)\n"
            "assert cf[:4].tolist() == [1.0] * 4, cf\n"
            "s = csr._row_codes.stats\n"
            "print(json.dumps([sum(s.cache_misses.values()), sum(s.cache_hits.values())]))\n")
    env = {"PYTHONPATH": str(tmp_path / "pkgs"), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def misses_hits():
        r = _run(code, **env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    assert misses_hits() == [1, 0]  # cold
    assert misses_hits() == [0, 1]  # warm
    intrinsics = tmp_path / "pkgs" / "kcopy" / "intrinsics.py"
    intrinsics.write_text(intrinsics.read_text() + "\n# edited\n")
    assert misses_hits() == [1, 0]  # an edit of what it inlines, not of csr.py: compiled again
    assert misses_hits() == [0, 1]


def test_linear_input_errors():
    rng = np.random.default_rng(0)
    t, _ = encoded(rng, "q4", 8, 64, 0.0, 64)
    x = np.ones(64, np.float32)
    cases = [
        (lambda: K.linear(x.astype(np.float64), t), "float32"),
        (lambda: K.linear(np.ones(63, np.float32), t), "expected \\[64\\]"),
        (lambda: K.linear(np.ones((64, 2), np.float32).T, t), "shape|contiguous"),
        (lambda: K.linear(x, t, np.empty(7, np.float32)), "out must be float32 of shape \\(8,\\)"),
        (lambda: K.linear(x, type(t)("q5", t.shape, t.parts, 64)), "unknown encoding"),
        (lambda: K.linear(x, type(t)("q4", t.shape, {"scales": t.parts["scales"]}, 64)), "lacks part 'qweight'"),
        (lambda: K.linear(x, type(t)("q4", t.shape, t.parts, 48)), "multiple of 32"),
        (lambda: K.linear(x, type(t)("q4", (8, 66), t.parts, 64)), "shape"),
        (lambda: K.linear(x, "weights"), "must have"),
    ]
    for call, pattern in cases:
        with pytest.raises(KernelError, match=pattern):
            call()


def test_artifact_tensors_run_in_place(tmp_path):
    """Weights straight from an mmapped, validated artifact (read-only views)."""
    from zoo.format import decode, open_artifact
    from zoo.synthetic import TINY_LLAMA, write_random_model

    path = write_random_model(tmp_path / "m", TINY_LLAMA, encoding="sparse-q4", sparsity=0.6, group_size=64)
    art = open_artifact(path)
    art.validate()
    t = art.tensors["blk.0.ffn_down.weight"]
    w = decode(t).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((3, t.shape[1])).astype(np.float32)
    int8 = matmul_kernel(K.prepare(t), K.selected_path(), x.shape[0]) in ("vnni", "vcsr")  # avx512: int8 activations
    bound = int8_activation_bound(w, x, t.group_size) if int8 else float_bound(w, x)
    np.testing.assert_array_less(np.abs(K.linear(x, t) - x @ w.T), bound)


def test_second_process_loads_kernels_from_cache():
    code = ("import json, numpy as np, zoo.kernels as K\nfrom zoo.format import encode\nfrom zoo.kernels.matvec import x86\n"
            "t = encode(np.ones((4, 128), np.float32), 'sparse-q4', group_size=128)\n"
            "K.linear(np.ones(128, np.float32), t)\n"
            "print(json.dumps({'misses': sum(x86.matvec_sparse_q.stats.cache_misses.values()),"
            " 'hits': sum(x86.matvec_sparse_q.stats.cache_hits.values())}))\n")
    _run(code)  # fills the cache if it was cold
    r = _run(code)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats == {"misses": 0, "hits": 1}, stats


def test_second_process_loads_session3_kernels_from_cache():
    """The CSR matmuls and the generic-IR portable rows link their own IR: a second process loads them
    from numba's cache too (every path this CPU runs)."""
    code = ("import json, numpy as np, zoo.kernels as K\nfrom zoo.format import encode\n"
            "from zoo.kernels.matmul import csr\nfrom zoo.kernels.matvec import generic\n"
            "w = np.ones((64, 256), np.float32); w[:, 1::4] = 0; w[:, 2::4] = 0; w[:, 3::4] = 0\n"
            "t, x = encode(w, 'sparse-q4', group_size=128), np.ones((40, 256), np.float32)\n"
            "fns = [csr.matmul_csr, generic.matvec_sparse_q, generic.matvec_q4]\n"
            "if 'avx512' in K.available_paths():\n"
            "    from zoo.kernels.matmul import vnni_csr\n    K.set_path('avx512'); K.linear(x, t); fns.append(vnni_csr.matmul_vcsr)\n"
            "K.set_path('portable'); K.linear(x, t); K.linear(x[0], t); K.linear(x[0], encode(w, 'q4', group_size=128))\n"
            "print(json.dumps({f.__name__: [sum(f.stats.cache_misses.values()), sum(f.stats.cache_hits.values())]"
            " for f in fns}))\n")
    _run(code)  # fills the cache if it was cold
    r = _run(code)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(misses == 0 and hits >= 1 for misses, hits in stats.values()), stats
