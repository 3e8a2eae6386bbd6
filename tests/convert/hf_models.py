"""Tiny random transformers checkpoints (Llama with awkward shapes, MPT) saved as HF directories (shared helpers)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def save_llama(path, **overrides):
    """A random LlamaForCausalLM with awkward shapes, saved as safetensors; returns the model."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=1000, hidden_size=320, intermediate_size=864, num_hidden_layers=2,
               num_attention_heads=5, num_key_value_heads=1, head_dim=64, max_position_embeddings=256,
               rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    cfg.update(overrides)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    with torch.no_grad():  # make norms non-trivial so a wrong norm weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def save_mpt(path, **overrides):
    """A random MptForCausalLM (6 heads: the non-power-of-2 ALiBi path), saved as safetensors."""
    torch.manual_seed(1)
    attn = {"alibi": True, "alibi_bias_max": 8, "clip_qkv": 0.3}
    attn.update(overrides.pop("attn_config", {}))
    cfg = dict(d_model=192, n_heads=6, n_layers=2, vocab_size=500, max_seq_len=128, layer_norm_epsilon=1e-5,
               attn_config=attn, no_bias=True)
    cfg.update(overrides)
    model = transformers.MptForCausalLM(transformers.MptConfig(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()
