"""compressed-tensors checkpoints written by the `compressed-tensors` package (0.14.0) itself, imported by zoo convert.

Each checkpoint is a tiny random Llama (transformers, torch CPU), pruned and quantized here with min-max parameters
as compressed-tensors' observers compute them, then compressed and saved by its ModelCompressor. The reference is
compressed-tensors' own decompression loaded into a float32 transformers model; zoo must give the same weights (its
exact products, rounded to the checkpoint's dtype, equal compressed-tensors' values bit for bit where the card says
kept exactly), the same zeros, and the same logits within float tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.config import SparsityCompressionConfig  # noqa: E402
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,  # noqa: E402
                                             apply_quantization_config)
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from zoo.convert import open_source  # noqa: E402
from zoo.convert.convert import convert  # noqa: E402
from zoo.format import decode, open_artifact  # noqa: E402
from zoo.runtime import reference  # noqa: E402

IDS = [3, 17, 300, 256, 4, 4, 81, 200, 12, 7, 383, 1, 64, 65, 66, 2]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
UPSTREAM = "test-org/tiny-llama-base"
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
RUNTIME_TOL = 3e-2  # zoo's kernels quantize activations to int8 on the VNNI/AVX2 paths (docs/kernels.md)


def tiny_model(dtype, arch: str = "llama") -> torch.nn.Module:
    """A random Llama (untied, GQA) or MPT (ALiBi, fused Wqkv, tied) with non-trivial norms."""
    torch.manual_seed(0)
    if arch == "mpt":
        cfg = transformers.MptConfig(d_model=128, n_heads=4, n_layers=2, vocab_size=384, max_seq_len=128, no_bias=True,
                                     attn_config={"alibi": True, "alibi_bias_max": 8})
        model = transformers.MptForCausalLM(cfg).eval()
    else:
        cfg = transformers.LlamaConfig(vocab_size=384, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                       max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.05 * torch.randn_like(p))
    return model.to(dtype)


def prune(model, pattern: str) -> None:
    """Zero half of every decoder linear weight: the smallest by magnitude (unstructured) or 2 of every 4 ("2:4")."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                w = mod.weight
                if pattern == "2:4":
                    blocks = w.view(-1, 4)
                    blocks.scatter_(1, blocks.abs().topk(2, dim=1, largest=False).indices, 0)
                else:
                    w[w.abs() <= w.abs().float().median().to(w.dtype)] = 0


def minmax(w: torch.Tensor, args, g_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point as compressed-tensors' min-max observer computes them (range including 0); with g_idx,
    group g holds the columns c with g_idx[c] == g."""
    w = w.float()
    rows, cols = w.shape
    if g_idx is not None:
        w = w[:, torch.argsort(g_idx)]
    if args.strategy == "block":  # [row blocks, col blocks, block elements]
        bh, bw = args.block_structure
        g = w.reshape(rows // bh, bh, cols // bw, bw).transpose(1, 2).reshape(rows // bh, cols // bw, -1)
    elif args.strategy == "group":
        g = w.reshape(rows, cols // args.group_size, args.group_size)
    elif args.strategy == "channel":
        g = w.reshape(rows, 1, cols)
    else:
        g = w.reshape(1, 1, -1)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    qmin, qmax = -(2 ** (args.num_bits - 1)), 2 ** (args.num_bits - 1) - 1
    if args.type == "float":
        s, z = torch.maximum(-lo, hi) / 448.0, torch.zeros_like(lo)
    elif args.symmetric:
        s, z = torch.maximum(-lo, hi) / ((qmax - qmin) / 2), torch.zeros_like(lo)
    else:
        s = (hi - lo) / (qmax - qmin)
        z = torch.round(qmin - lo / s).clamp(qmin, qmax)
    s = s.clamp(min=torch.finfo(torch.float16).eps)
    if args.strategy == "tensor":
        s, z = s.reshape(1), z.reshape(1)
    return s, z


def write_checkpoint(path: Path, *, quant_format: str | None = None, weights: dict | None = None,
                     sparsity: str | None = None, dtype=torch.bfloat16, activations: dict | None = None,
                     arch: str = "llama") -> Path:
    """A compressed-tensors checkpoint of a tiny model (README front matter names its base model). With
    weights["actorder"], each layer's groups get a random column permutation (weight_g_idx)."""
    model = tiny_model(dtype, arch)
    if sparsity:
        prune(model, "2:4" if sparsity == "sparse-24-bitmask" else "unstructured")
    if weights:
        scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**weights),
                                    input_activations=QuantizationArgs(**activations) if activations else None)
        apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
        gen = torch.Generator().manual_seed(1)
        for mod in model.modules():
            if hasattr(mod, "weight_scale"):
                g_idx = None
                if hasattr(mod, "weight_g_idx"):
                    cols, gs = mod.weight.shape[1], mod.quantization_scheme.weights.group_size
                    g_idx = (torch.arange(cols) // gs)[torch.randperm(cols, generator=gen)].to(torch.int32)
                    mod.weight_g_idx.data = g_idx
                s, z = minmax(mod.weight.data, mod.quantization_scheme.weights, g_idx)
                mod.weight_scale.data = s.to(mod.weight_scale.dtype)
                if hasattr(mod, "weight_zero_point"):
                    mod.weight_zero_point.data = z.to(mod.weight_zero_point.dtype)
    sparse_config = None if sparsity is None else SparsityCompressionConfig.load_from_registry(
        sparsity, targets=["Linear"], ignore=["lm_head"], global_sparsity=0.5,
        sparsity_structure="2:4" if sparsity == "sparse-24-bitmask" else "unstructured")
    compressor = ModelCompressor.from_pretrained_model(model, sparsity_config_or_format=sparse_config,
                                                       quantization_format=quant_format)
    model.save_pretrained(path, state_dict=compressor.compress(model))
    compressor.update_config(path)
    (path / "README.md").write_text(f"---\nbase_model: {UPSTREAM}\nlicense: apache-2.0\n---\n# tiny\n")
    return path


def decompressed(path: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """compressed-tensors' own compressors decompress every weight of the checkpoint, with float32 scales (so the
    products are exact, not rounded to bf16); returns the float32 transformers reference and those weights."""
    cfg = json.loads((path / "config.json").read_text())
    qc = cfg.pop("quantization_config")
    compressor = ModelCompressor.from_compression_config(qc)
    stored = load_file(path / "model.safetensors")
    modules = {k.rsplit(".", 1)[0] for k in stored if k.endswith((".weight_packed", ".compressed", ".weight_scale"))}
    weights = {k: v for k, v in stored.items() if k.rsplit(".", 1)[0] not in modules}
    for module in modules:
        parts = {k[len(module) + 1:]: v for k, v in stored.items() if k.rsplit(".", 1)[0] == module}
        if "compressed" in parts:
            sparse = compressor.sparsity_compressor
            data = {k: parts[k] for k in sparse.compression_param_names if k in parts}
            parts["weight"] = sparse.decompress_weight(data)
        if "weight_scale" in parts and parts.get("weight", torch.empty(0, dtype=torch.int8)).dtype in FLOATS:
            # format dense: float weights, quantized in every forward
            args = next(iter(compressor.quantization_config.config_groups.values())).weights
            zp, g_idx = parts.get("weight_zero_point"), parts.get("weight_g_idx")
            codes = quantize(parts["weight"], parts["weight_scale"], zp, args, g_idx=g_idx)  # in the weight's dtype
            parts["weight"] = dequantize(codes.float(), parts["weight_scale"].float(), zp, args, torch.float32, g_idx)
        elif "weight_scale" in parts:
            quant = next(iter(compressor.quantization_compressor.values()))
            data = {k: v for k, v in parts.items() if k in quant.compression_param_names}
            data["weight_scale"] = data["weight_scale"].float()
            args = next(iter(compressor.quantization_config.config_groups.values())).weights
            parts["weight"] = quant.decompress_weight(data, quantization_args=args)
        weights[module + ".weight"] = parts["weight"]
    kind = (transformers.MptForCausalLM, transformers.MptConfig) if cfg["model_type"] == "mpt" else \
        (transformers.LlamaForCausalLM, transformers.LlamaConfig)
    ref = kind[0](kind[1](**{k: v for k, v in cfg.items() if k not in ("architectures", "dtype")})).float().eval()
    missing, unexpected = ref.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    assert not unexpected and all("rotary" in k or k == "lm_head.weight" for k in missing), (missing, unexpected)
    return ref, weights


def zoo_logits(art: Path) -> np.ndarray:
    from zoo.runtime.model import Model

    return Model.load(art, ctx=32).forward(IDS, 0, all_logits=True)


def check_import(tmp_path: Path, ckpt: Path, expect: dict[str, str], exact: bool = True, tol: float = 2e-3,
                 encoding: str = "auto", runtime_tol: float = RUNTIME_TOL) -> dict:
    """Convert, then: encodings as expected, weights equal to compressed-tensors' (bitwise after rounding to its
    dtype when `exact`), zeros identical, card sparsity = counted zeros, logits = transformers' within `tol`."""
    art = open_artifact(convert(ckpt, tmp_path / "art", encoding=encoding))
    art.validate()
    ref, ct_weights = decompressed(ckpt)
    ours_of = {hf + ".weight": ours for ours, hf in open_source(ckpt).hf_name.items()}
    zeros = total = 0
    for hf, ct_w in ct_weights.items():
        if hf.split(".")[-2] not in expect:
            continue
        t = art.tensors[ours_of[hf]]
        assert t.encoding == expect[hf.split(".")[-2]], (hf, t.encoding)
        ours = decode(t)
        assert np.array_equal(ours == 0, ct_w.float().numpy() == 0), hf  # sparsity kept exactly: same zeros
        if exact:
            assert torch.equal(torch.from_numpy(ours).to(ct_w.dtype), ct_w), hf
        zeros += int((ours == 0).sum())
        total += ours.size
    if "output.weight" in art.tensors:  # convert counts an untied head among the matrices
        head = decode(art.tensors["output.weight"])
        zeros, total = zeros + int((head == 0).sum()), total + head.size
    card = art.card
    assert card["metrics"]["sparsity"] == round(zeros / total, 4)
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].numpy()
    art_src = open_source(tmp_path / "art")
    exact_forward = reference.logits(art_src.config, art_src.tensor, IDS, dtype=np.float64)
    err = np.abs(exact_forward - want).max() / np.abs(want).max()
    assert err < tol, err
    err = np.abs(zoo_logits(tmp_path / "art") - want).max() / np.abs(want).max()
    assert err < runtime_tol, err
    return card


def test_detected_as_compressed_tensors_with_provenance(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=128, symmetric=True))
    src = open_source(ckpt)
    assert type(src).__name__ == "CTSource" and "pack-quantized" in src.description
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"))
    assert card["base_model"]["upstream"] == UPSTREAM and card["base_model"]["sha256"] == src.sha256
    fmt = card["conversion"]["source_format"]
    assert fmt["name"] == "compressed-tensors" and fmt["version"] == "0.14.0" and "pack-quantized" in fmt["formats"]
    assert fmt["quantization"]["config_groups"]["group_0"]["weights"]["group_size"] == 128
    assert card["conversion"]["kept_exactly"] == 14 and card["conversion"]["re_encoded"] == {}
    assert card["compression"]["bits"] == 4 and card["compression"]["group_size"] == 128


def test_pack_quantized_int4_asymmetric_keeps_zero_points(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=False))
    art = tmp_path / "art"
    check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"))
    assert "zeros" in open_artifact(art).tensors["blk.0.attn_q.weight"].parts


def test_pack_quantized_int4_channel_float16(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized", dtype=torch.float16,
                            weights=dict(num_bits=4, strategy="channel", symmetric=True))
    check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"))


def tolerance(bits: int, symmetric: bool) -> dict:
    """check_import's logit tolerances: int4 codes are kept exactly; symmetric int8 codes are kept but a -128 code
    becomes -127 (one step on those weights); asymmetric int8 is re-quantized by zoo, whose half-step rounding puts
    the logits about as far from compressed-tensors' (2.1% here) as compressed-tensors' own asymmetric int8 puts them
    from the float weights it quantized (2.5%): this tiny random model amplifies weight noise."""
    if bits == 4:
        return {}
    return {"tol": 5e-3} if symmetric else {"tol": 3e-2, "runtime_tol": 5e-2}


@pytest.mark.parametrize("bits, strategy, symmetric", [(4, "channel", False), (8, "group", True), (8, "group", False),
                                                      (8, "channel", False)])
def test_pack_quantized_schemes(tmp_path, bits, strategy, symmetric):
    """The rest of pack-quantized's int4 / int8 x group / channel x symmetric / asymmetric (the others have their own
    tests): int4 codes are kept (asymmetric ones with zero points); int8 codes are kept when q - z fits q8, else
    (asymmetric int8: q - z reaches +-255) re-quantized by zoo at 8 bits, and the card says which."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=bits, strategy=strategy, symmetric=symmetric,
                                         **({"group_size": 64} if strategy == "group" else {})))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, f"q{bits}"), exact=bits == 4,
                        **tolerance(bits, symmetric))
    conversion = card["conversion"]
    assert conversion["kept_exactly"] + sum(conversion["re_encoded"].values()) == 14
    if bits == 4:
        assert conversion["kept_exactly"] == 14
        assert ("zeros" in open_artifact(tmp_path / "art").tensors["blk.0.ffn_up.weight"].parts) == (not symmetric)
    elif symmetric:
        assert set(conversion["re_encoded"]) <= {"codes kept, int8 code -128 clipped to -127"}
    else:
        assert "codes beyond q8's [-127, 127]: decoded and re-encoded" in conversion["re_encoded"]


@pytest.mark.parametrize("bits, symmetric", [(4, True), (8, False)])
def test_dense_format_weights_are_quantized_as_compressed_tensors_does(tmp_path, bits, symmetric):
    """Format `dense` with a quantization scheme: float weights and their scales are stored, and compressed-tensors
    quantizes the weights in every forward. zoo computes the same codes (torch's bf16 rounding included) and keeps
    them; the reference is compressed-tensors' own quantize (in bf16), dequantized with float32 scales."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="dense",
                            weights=dict(num_bits=bits, strategy="group", group_size=64, symmetric=symmetric))
    assert "model.layers.0.mlp.up_proj.weight_scale" in load_file(ckpt / "model.safetensors")
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, f"q{bits}"), exact=bits == 4,
                        **tolerance(bits, symmetric))
    fmt = card["conversion"]["source_format"]
    assert fmt["quantized_on_import"] == 14 and fmt["quantization"]["format"] == "dense"


def test_dense_format_pruned_checkpoint_becomes_sparse(tmp_path):
    """A pruned checkpoint saved with sparsity_config format `dense` (zeros stored as zeros): sparse-f16, the
    checkpoint's sparsity and pattern on the card."""
    model_dir = write_checkpoint(tmp_path / "ckpt", sparsity="dense")
    assert json.loads((model_dir / "config.json").read_text())["quantization_config"]["sparsity_config"]["format"] \
        == "dense"
    card = check_import(tmp_path, model_dir, dict.fromkeys(LINEARS, "sparse-f16"))
    assert card["compression"]["sparsity"] == 0.5 and card["compression"]["pattern"] == "unstructured"
    assert card["conversion"]["source_format"]["formats"] == ["dense"]


def test_pack_quantized_int8_channel(tmp_path):
    """int8 codes are q8 codes, but min-max scales (absmax / 127.5) reach -128 where a row's largest magnitude is
    negative, and q8 stops at -127: those codes are clipped (one step on those weights only) and the card says so."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=8, strategy="channel", symmetric=True))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q8"), exact=False, tol=2e-3)
    assert card["conversion"]["re_encoded"] == {"codes kept, int8 code -128 clipped to -127": 14}
    art, src = open_artifact(tmp_path / "art"), open_source(ckpt)
    for name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        t = art.tensors[name]
        codes, scale = t.parts["qweight"].astype(np.float32), t.parts["scales"].astype(np.float32)
        stored = src.tensor(name) / scale  # the checkpoint's codes, exactly (f16-exact bf16 scales)
        clipped = stored == -128
        assert np.array_equal(codes[~clipped], stored[~clipped]) and np.all(codes[clipped] == -127) and clipped.any()


def test_float32_scales_are_rounded_and_said_so(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized", dtype=torch.float32,
                            weights=dict(num_bits=4, strategy="group", group_size=128, symmetric=True))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"), exact=False)
    assert card["conversion"]["re_encoded"] == {"codes kept, scales rounded to float16": 14}


def test_naive_quantized_int4_group(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="naive-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=32, symmetric=True))
    check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"))


@pytest.mark.parametrize("dynamic", [True, False])
def test_int_quantized_w8a8_records_activation_scheme(tmp_path, dynamic):
    """W8A8: the activation scheme goes on the card; static schemes store input scales, which zoo counts and ignores
    (its kernels quantize activations themselves)."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="int-quantized",
                            weights=dict(num_bits=8, strategy="tensor", symmetric=True),
                            activations=dict(num_bits=8, strategy="token" if dynamic else "tensor", dynamic=dynamic,
                                             symmetric=True))
    assert any(k.endswith(".input_scale") for k in load_file(ckpt / "model.safetensors")) == (not dynamic)
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q8"), exact=False)
    fmt = card["conversion"]["source_format"]
    activations = fmt["quantization"]["config_groups"]["group_0"]["input_activations"]
    assert activations["strategy"] == ("token" if dynamic else "tensor") and activations["dynamic"] is dynamic
    assert fmt.get("activation_tensors_ignored", 0) == (0 if dynamic else 14)


@pytest.mark.parametrize("strategy, sparsity", [("channel", None), ("block", None), ("channel", "sparse-24-bitmask")])
def test_float_quantized_fp8_is_decoded_to_f16(tmp_path, strategy, sparsity):
    """FP8 (e4m3) weights, per channel or per 128x128 block, alone or under a 2:4 mask (FP8 values compressed)."""
    block = dict(block_structure=[128, 128]) if strategy == "block" else {}
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="float-quantized", sparsity=sparsity,
                            weights=dict(num_bits=8, type="float", strategy=strategy, symmetric=True, **block))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "sparse-f16" if sparsity else "dense"), exact=False)
    assert card["conversion"]["re_encoded"] == {"float8 weights: decoded and re-encoded": 14}


@pytest.mark.parametrize("sparsity", ["sparse-bitmask", "sparse-24-bitmask"])
def test_sparse_float_weights_stay_sparse_and_exact(tmp_path, sparsity):
    ckpt = write_checkpoint(tmp_path / "ckpt", sparsity=sparsity)
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "sparse-f16"))
    assert card["compression"]["pattern"] == ("2:4" if sparsity == "sparse-24-bitmask" else "unstructured")
    assert card["compression"]["sparsity"] == 0.5  # the checkpoint's global_sparsity
    assert sparsity in card["conversion"]["source_format"]["formats"]


def test_sparse_bitmask_over_int4_codes_becomes_sparse_q4(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="int-quantized", sparsity="sparse-bitmask",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=True))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "sparse-q4"))
    assert card["conversion"]["kept_exactly"] == 14 and card["metrics"]["sparsity"] > 0.45


def test_sparse_24_over_int4_asymmetric_codes(tmp_path):
    """Asymmetric int4 under a 2:4 mask: compressed-tensors drops codes (not weights); zoo decodes as it does."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="naive-quantized", sparsity="sparse-24-bitmask",
                            weights=dict(num_bits=4, strategy="group", group_size=128, symmetric=False))
    check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "q4"))


def test_mpt_sparse_int8(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", arch="mpt", quant_format="int-quantized", sparsity="sparse-bitmask",
                            weights=dict(num_bits=8, strategy="group", group_size=64, symmetric=True))
    card = check_import(tmp_path, ckpt, dict.fromkeys(("Wqkv", "out_proj", "up_proj", "down_proj"), "sparse-q8"),
                        exact=False)
    assert card["architecture"] == "mpt" and card["conversion"]["kept_exactly"] + sum(
        card["conversion"]["re_encoded"].values()) == 8


def test_old_names_with_weight_infix(tmp_path, sparse):
    """Before compressed-tensors 0.9 the sparse parts were named `<module>.weight.compressed` etc.: same import."""
    parts = (".compressed", ".bitmask", ".row_offsets", ".shape")
    old = variant(sparse, tmp_path / "old", tensors=lambda s: s.update(
        {k.rsplit(".", 1)[0] + ".weight." + k.rsplit(".", 1)[1]: s.pop(k) for k in list(s) if k.endswith(parts)}))
    assert any(".weight.compressed" in k for k in load_file(old / "model.safetensors"))
    new_art, old_art = open_artifact(convert(sparse, tmp_path / "new")), open_artifact(convert(old, tmp_path / "o"))
    for name, t in new_art.tensors.items():
        assert old_art.tensors[name].encoding == t.encoding and np.array_equal(decode(old_art.tensors[name]), decode(t))


def test_activation_ordered_groups(tmp_path):
    """weight_g_idx (GPTQ activation order): groups are column sets, not runs; decoded exactly (f16 here), and under
    `auto` re-quantized by zoo since zoo's groups are runs of columns."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=True, actorder="group"))
    assert "model.layers.0.mlp.up_proj.weight_g_idx" in load_file(ckpt / "model.safetensors")
    check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "dense"), exact=False, encoding="f16")
    card = open_artifact(convert(ckpt, tmp_path / "auto")).card
    assert card["conversion"]["re_encoded"] == {"activation-ordered groups (g_idx): decoded and re-encoded": 14}


def test_encoding_f16_decodes_and_says_so(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=128, symmetric=True))
    card = check_import(tmp_path, ckpt, dict.fromkeys(LINEARS, "dense"), encoding="f16")
    assert card["conversion"]["re_encoded"] == {"--encoding f16: decoded and re-encoded": 14}
    assert card["compression"]["bits"] == 16


# --- malformed checkpoints: one line on stderr, exit code 1, nothing written ----------------------------------------


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ct") / "packed", quant_format="pack-quantized",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=False))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ct") / "sparse", quant_format="int-quantized",
                            sparsity="sparse-bitmask", weights=dict(num_bits=8, strategy="channel", symmetric=True))


def variant(src: Path, dst: Path, tensors=None, config=None) -> Path:
    """A copy of checkpoint `src` with its tensors and/or config.json changed by the given functions."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    if tensors:
        state = load_file(src / "model.safetensors")
        tensors(state)
        save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    if config:
        cfg = json.loads((src / "config.json").read_text())
        config(cfg["quantization_config"])
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


Q = "model.layers.0.self_attn.q_proj"


def drop(part: str):
    return dict(tensors=lambda s: s.pop(f"{Q}.{part}"))


def change(part: str, fn):
    return dict(tensors=lambda s: s.update({f"{Q}.{part}": fn(s[f"{Q}.{part}"]).clone()}))


MALFORMED = {  # case -> (checkpoint, change, what the one line must say)
    "missing-scale": ("packed", drop("weight_scale"), "codes without weight_scale"),
    "missing-weight": ("packed", drop("weight_packed"), "no weight, weight_packed or compressed"),
    "packed-shape": ("packed", change("weight_packed", lambda t: t[:, :-1]), "weight_packed must be I32"),
    "scale-shape": ("packed", change("weight_scale", lambda t: t[:, :2]), "weight_scale is"),
    "zero-point-shape": ("packed", change("weight_zero_point", lambda t: t[:-1]), "weight_zero_point must be"),
    "zero-point-missing": ("packed", drop("weight_zero_point"), "asymmetric scheme without weight_zero_point"),
    "not-finite-scale": ("packed", change("weight_scale", lambda t: t.index_fill(1, torch.tensor([1]), float("inf"))),
                         "weight_scale is not finite"),
    "unknown-format": ("packed", dict(config=lambda q: q.update(format="pack-quantized-v9")),
                       "unknown compressed-tensors format 'pack-quantized-v9'"),
    "unsupported-scheme": ("packed", dict(config=lambda q: q["config_groups"]["group_0"]["weights"].update(
        strategy="tensor_group")), "weight strategy 'tensor_group' is not supported"),
    "fp4": ("packed", dict(config=lambda q: q["config_groups"]["group_0"]["weights"].update(type="float", num_bits=4)),
            "weight type float with 4 bits is not supported"),
    "bitmask-size": ("sparse", change("bitmask", lambda t: t[:, :-1]), "bitmask is U8"),
    "bitmask-count": ("sparse", change("compressed", lambda t: t[:-3]), "bitmask sets"),
    "bitmask-missing": ("sparse", drop("bitmask"), "sparse-bitmask without bitmask"),
    "shape-missing": ("packed", drop("weight_shape"), "weight_packed without weight_shape"),
    "row-offsets": ("sparse", change("row_offsets", lambda t: t + 1), "row_offsets do not match"),
    "codes-range": ("sparse", dict(config=lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=4)),
                    "codes outside [-8, 7] for 4-bit weights"),
    "unexpected-tensor": ("packed", dict(tensors=lambda s: s.update({f"{Q}.bias": torch.zeros(256)})),
                          f"unexpected tensor {Q}.bias for llama"),
    "ignored-but-quantized": ("packed", dict(config=lambda q: q.update(ignore=["lm_head", Q])),
                              f"{Q}: has weight_scale but the config's ignore list names it"),
    "undeclared-layout": ("sparse", dict(config=lambda q: q.update(sparsity_config={})),
                          "stored as sparse-bitmask, which the config does not declare"),
}


def refusal(ckpt: Path, out: Path) -> str:
    """`zoo convert ckpt -o out` fails: exit code 1, one `zoo: error:` line on stderr, nothing written; the line."""
    proc = subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", "convert", str(ckpt), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("zoo: error: "), proc.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_refused_with_one_line(tmp_path, packed, sparse, case):
    base, change, message = MALFORMED[case]
    line = refusal(variant(packed if base == "packed" else sparse, tmp_path / "bad", **change), tmp_path / "out")
    assert message in line, line


def test_marlin_24_checkpoint_refused_naming_the_format(tmp_path):
    """marlin-24 (2:4 + int4 for a GPU kernel): its tile permutation is defined only by kernel code, never specified."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="marlin-24", sparsity="sparse-24-bitmask",
                            dtype=torch.float16, weights=dict(num_bits=4, strategy="group", group_size=128))
    assert "compressed-tensors format 'marlin-24' is not supported" in refusal(ckpt, tmp_path / "out")


def test_dense_format_float8_scheme_refused(tmp_path):
    """Float weights that compressed-tensors would round to FP8 in every forward: zoo does not emulate that rounding."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="dense",
                            weights=dict(num_bits=8, type="float", strategy="channel", symmetric=True))
    assert "unquantized BF16 weights under a float8 scheme (format dense) are not supported" in \
        refusal(ckpt, tmp_path / "out")


def zoo_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command with its own ZOO_HOME and a wide terminal (rich wraps at COLUMNS)."""
    env = {**os.environ, "ZOO_HOME": str(home), "COLUMNS": "250", "ZOO_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_show_and_inspect_print_the_source_and_count_pruned_codes(tmp_path):
    """A pruned, asymmetric int4 checkpoint (zeros stored as codes equal to the zero point) imports as q4 with zero
    points: `zoo convert` says what it kept, `zoo inspect` counts the weights that decode to 0, and it and `zoo show`
    name the source format and the base model the checkpoint's README names."""
    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized", sparsity="dense",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=False))
    home, art = tmp_path / "home", tmp_path / "art"
    done = json.loads(zoo_cli(home, "convert", str(ckpt), "-o", str(art), "--json").stdout)
    assert done["source_format"] == "compressed-tensors" and done["kept_exactly"] == 14 and done["re_encoded"] == {}
    said = zoo_cli(home, "convert", str(ckpt), "-o", str(tmp_path / "again")).stderr
    assert "source: compressed-tensors (dense, pack-quantized); 14 quantized tensors kept exactly" in said
    doc = json.loads(zoo_cli(home, "inspect", str(art), "--json").stdout)
    tensors = open_artifact(art).tensors
    for row in doc["tensors"]:
        t = tensors[row["name"]]
        if row["name"].startswith("blk.") and t.encoding == "q4":
            zeros = int(np.count_nonzero(decode(t) == 0))
            assert "zeros" in t.parts and row["zero_codes"] == zeros / decode(t).size and row["zero_codes"] > 0.45
    text = zoo_cli(home, "inspect", str(art), "--no-tensors").stdout
    assert "compressed-tensors checkpoint ckpt (llama; dense, pack-quantized)" in text and UPSTREAM in text
    zoo_cli(home, "push", str(art), "tiny-ct:v1", "--registry", str(tmp_path / "registry"))
    shown = zoo_cli(home, "show", "tiny-ct:v1", "--registry", str(tmp_path / "registry")).stdout
    assert "compressed-tensors checkpoint ckpt (llama; dense, pack-quantized)" in shown


def test_imported_checkpoint_exports_back_to_transformers(tmp_path):
    """compressed-tensors -> zoo -> `zoo export --to hf`: transformers loads the export and computes the checkpoint's
    model (f16 storage of the kept int4 values), and the README names the checkpoint's base model for the Hub."""
    import yaml

    from zoo.convert.export_hf import export_hf

    ckpt = write_checkpoint(tmp_path / "ckpt", quant_format="pack-quantized", sparsity="sparse-bitmask",
                            weights=dict(num_bits=4, strategy="group", group_size=64, symmetric=True))
    art = convert(ckpt, tmp_path / "art")
    result = export_hf(art, tmp_path / "hf")
    assert result.sparsity > 0.45
    model, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32,
                                                                    output_loading_info=True)
    assert not any(info.values()), info
    ref, _ = decompressed(ckpt)
    with torch.no_grad():
        got, want = (m.eval()(torch.tensor([IDS])).logits[0].numpy() for m in (model, ref))
    assert np.abs(got - want).max() / np.abs(want).max() < 3e-3
    front = yaml.safe_load((tmp_path / "hf" / "README.md").read_text().split("---\n")[1])
    assert front["base_model"] == UPSTREAM and front["library_name"] == "transformers"
