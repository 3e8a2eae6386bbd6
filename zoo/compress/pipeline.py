"""Stream a model through compression one decoder layer at a time and write the artifact + card.

For layer i: the calibration activations entering it run through the dense layer with a hook that
accumulates each linear's input statistics (Σx² per column; XᵀX when SparseGPT/GPTQ need it); every
linear is then pruned/quantized; the compressed layer (decoded exactly as stored) recomputes the
activations that enter layer i+1. Peak memory is one layer's weights and statistics plus the
activations [samples, seq_len, dim]. The artifact is assembled in a hidden staging directory beside
the target, evaluated there, and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from zoo.errors import CompressError
from zoo.format import ArtifactWriter, decode, encode
from zoo.untrusted import load_yaml
from zoo.workdirs import compress_staging, sweep

from .calibration import Calibration, calibration_windows
from .linear import InputStats, compress_linear
from .masks import tile4_keep
from .neurons import channel_scores, keep_channels, kept_hidden
from .pages import release_source_pages
from .profile import outlier_ratio, owl_sparsities, uniform
from .recipe import Recipe
from .sensitivity import sensitivity_profile
from .windows import collect, forward, short_name

Progress = Callable[[str], None]


@dataclass
class LayerReport:
    """What happened to one decoder layer: weights kept / total over its linears, stored bytes."""

    kept: int = 0
    total: int = 0
    nbytes: int = 0
    sparsity_target: float = 0.0
    hidden: int | None = None
    encodings: Counter = field(default_factory=Counter)  # encoding -> how many of the layer's linears got it


def _eta(start: float, done: int, total: int) -> str:
    if not done:
        return "eta ?"
    left = (time.monotonic() - start) / done * (total - done)
    return f"eta {int(left // 60)}m{int(left % 60):02d}s"


def outlier_ratios(source, calib: Calibration, ms: list[float], progress: Progress | None = None) -> dict[float, list[float]]:
    """{M: per-layer outlier ratios} from one dense pass over the calibration windows (OWL's LOD)."""
    from zoo.runtime.reference import embed, layer_names

    config = source.config
    token_embd = source.tensor("token_embd.weight")
    x = np.stack([embed(token_embd, t) for t in calib.tokens])
    del token_embd
    ratios: dict[float, list[float]] = {m: [] for m in ms}
    start = time.monotonic()
    for i in range(config["n_layers"]):
        weights = {n: source.tensor(n) for n in layer_names(config, i)}
        stats = collect(config, weights, x, i, lambda _: False, advance=True)  # x <- the dense layer's outputs
        scores = [np.abs(w) * stats[short_name(n)].col_norms[None, :].astype(np.float32)
                  for n, w in weights.items() if w.ndim == 2]
        for m in ms:
            ratios[m].append(outlier_ratio(scores, m))
        if progress:
            shown = ", ".join(f"M={m:g}: {100 * r[-1]:.2f}%" for m, r in ratios.items())
            progress(f"owl: layer {i + 1}/{config['n_layers']} outliers {shown} ({_eta(start, i + 1, config['n_layers'])})")
    return ratios


def owl_profile(source, calib: Calibration, recipe: Recipe, progress: Progress | None = None,
                ratios: list[float] | None = None) -> tuple[list[float], list[float]]:
    """(per-layer sparsities, per-layer outlier ratios); `ratios` given (for M = recipe.owl_m) skips the dense pass."""
    if ratios is None:
        ratios = outlier_ratios(source, calib, [recipe.owl_m], progress)[recipe.owl_m]
    if len(ratios) != source.config["n_layers"]:
        raise CompressError(f"owl_ratios has {len(ratios)} entries for {source.config['n_layers']} layers")
    return owl_sparsities(ratios, recipe.sparsity, recipe.owl_lambda), list(ratios)


def _compress_layer(config: dict, i: int, weights: dict[str, np.ndarray], stats: dict[str, InputStats],
                    recipe: Recipe, sparsity: float) -> tuple[dict, dict[str, np.ndarray], dict, LayerReport]:
    """Encode the layer's tensors; returns (encoded by name, decoded weights for the forward, keep-masks
    by name (None: nothing pruned), report).

    Consumes `weights`: each dense matrix leaves the dict once encoded, so the layer's float32 weights
    and their decoded copies are not all held at once (a 7B layer is 0.8 GB of each).
    """
    b = f"blk.{i}."
    report = LayerReport(sparsity_target=sparsity)
    lin = recipe.for_layer(sparsity)
    if recipe.pattern == "neurons" and sparsity > 0:
        up, down = weights[b + "ffn_up.weight"], weights[b + "ffn_down.weight"]
        norms = stats["ffn_down"].col_norms if "ffn_down" in stats and recipe.method != "magnitude" else None
        keep = keep_channels(channel_scores(down, up, norms), sparsity)
        report.hidden = int(keep.size)
        for short in ("ffn_gate", "ffn_up"):
            if b + short + ".weight" in weights:
                weights[b + short + ".weight"] = np.ascontiguousarray(weights[b + short + ".weight"][keep])
        weights[b + "ffn_down.weight"] = np.ascontiguousarray(down[:, keep])
        del up, down
        if "ffn_down" in stats:
            old = stats["ffn_down"]
            new = InputStats(int(keep.size), old.xtx is not None)
            new.sq_sum, new.tokens = old.sq_sum[keep], old.tokens
            if old.xtx is not None:
                new.xtx = old.xtx[np.ix_(keep, keep)]
            stats = {**stats, "ffn_down": new}
    encoded, decoded, masks = {}, {}, {}
    for name in list(weights):
        w = weights.pop(name)
        if w.ndim == 1:
            enc = encode(w, "dense", dtype="F32")
            encoded[name], decoded[name] = enc, w
            continue
        enc, mask = compress_linear(w, stats.get(short_name(name)), lin)
        encoded[name], decoded[name], masks[name] = enc, decode(enc), mask
        report.encodings[enc.encoding] += 1
        report.kept += int(w.size if mask is None else mask.sum())
        report.nbytes += enc.nbytes
        del w, mask
    return encoded, decoded, masks, report


def _out_config(config: dict, recipe: Recipe, layer_sparsity: list[float]) -> dict:
    from zoo.format.architectures import hidden_dims

    out = dict(config)
    if recipe.pattern == "neurons" and recipe.sparsity > 0:
        out["hidden_dim"] = [kept_hidden(h, s) for h, s in zip(hidden_dims(config), layer_sparsity)]
    return out


def _dense_linear_count(config: dict, i: int) -> int:
    from zoo.format import expected_tensors

    b = f"blk.{i}."
    return sum(int(np.prod(s)) for n, s in expected_tensors(config).items() if n.startswith(b) and len(s) == 2)


def _encode_edge(name: str, w: np.ndarray, config: dict, recipe: Recipe):
    """The embedding and output head, by zoo convert's rule: read whole every token, so q8 when the body
    is quantized (a tied embedding is the head too; an untied head only under a 4-bit body), else F16."""
    tied = config["tied_embeddings"]
    if recipe.bits < 16 and (tied if name == "token_embd.weight" else recipe.bits <= 4):
        return encode(w, "q8", group_size=recipe.group_size)
    return encode(w, "dense", dtype="F16")


def stream_compress(source, writer: ArtifactWriter, recipe: Recipe, calib: Calibration | None,
                    layer_sparsity: list[float], progress: Progress | None = None) -> tuple[list[LayerReport], dict, list]:
    """Compress every decoder layer of `source` into `writer`, one layer in memory at a time.

    With `recipe.recover` blockwise or both, each compressed block is then trained to match the dense block
    (zoo.compress.recover); distillation runs after, on the written artifact (zoo.compress.distill).
    Returns (one report per layer, {edge tensor name: its encoding} for the embedding and head,
    one BlockRecovery per layer or [] without recovery)."""
    from zoo.runtime.reference import embed, layer_names

    config = source.config
    n_layers = config["n_layers"]
    recovering = recipe.recover in ("blockwise", "both") and calib is not None
    token_embd = source.tensor("token_embd.weight")
    edges = {"token_embd.weight": _encode_edge("token_embd.weight", token_embd, config, recipe)}
    writer.add("token_embd.weight", edges["token_embd.weight"])
    x = np.stack([embed(token_embd, t) for t in calib.tokens]) if calib is not None else None
    dense_x = x.copy() if recovering else None  # the dense model's activations: recovery's targets
    del token_embd
    release_source_pages(source, source.names)  # opening may have read (validated) every tensor
    reports, recoveries = [], []
    start = time.monotonic()
    for i in range(n_layers):
        weights = {n: source.tensor(n) for n in layer_names(config, i)}
        need = recipe.for_layer(layer_sparsity[i]).needs_hessian
        if recovering:
            forward(config, weights, dense_x, i)  # dense_x <- the dense block's outputs on dense inputs
        stats = collect(config, weights, x, i, lambda _: need) if x is not None else {}
        encoded, decoded, masks, report = _compress_layer(config, i, weights, stats, recipe, layer_sparsity[i])
        del weights, stats
        report.total = _dense_linear_count(config, i)
        if recovering:
            from .recover import recover_block

            encoded, decoded, rec = recover_block(config, i, encoded, masks, decoded, x, dense_x, recipe.bits,
                                                  recipe.recover_tokens, recipe.seed, recipe.recover_lr)
            recoveries.append(rec)
        del masks
        for name in sorted(encoded):
            writer.add(name, encoded[name])
        del encoded
        if x is not None:
            forward(config, decoded, x, i)
        del decoded
        release_source_pages(source, layer_names(config, i))  # a mmapped source's pages: RSS stays one layer
        reports.append(report)
        if progress:
            got = (f", recovery error {recoveries[-1].loss_before:.3g} -> {recoveries[-1].loss_after:.3g}"
                   if recovering else "")
            progress(f"layer {i + 1}/{n_layers}: sparsity {1 - report.kept / report.total:.3f}, "
                     f"{8 * report.nbytes / report.total:.2f} bits/weight{got} ({_eta(start, i + 1, n_layers)})")
    writer.add("output_norm.weight", encode(source.tensor("output_norm.weight"), "dense", dtype="F32"))
    if not config["tied_embeddings"]:
        edges["output.weight"] = _encode_edge("output.weight", source.tensor("output.weight"), config, recipe)
        writer.add("output.weight", edges["output.weight"])
    release_source_pages(source, source.names)
    return reports, {name: t.encoding for name, t in edges.items()}, recoveries


def _linear_reason(encoding: str, recipe: Recipe) -> str:
    """Why the decoder-block linears got `encoding` (one line for the card)."""
    r, pruned = recipe, bool(recipe.sparsity) and recipe.pattern != "neurons"
    if encoding == "tile4-q4":
        return (f"block linears, pattern tile4 at {r.bits} bits: each 4-row tile keeps {tile4_keep(r.sparsity)} of "
                "every 128 columns, the sparse form the decode kernels skip work in")
    if encoding == "sparse-q4":
        return ("block linears with at least 90% of their weights pruned: bitmask + 4-bit codes of the kept weights "
                "(past the measured crossover where sparse-q4 decodes faster than q4)")
    if encoding == "q4" and pruned:
        return ("block linears pruned below 90% without a tile pattern: plain q4, pruned weights stored as "
                "code 0 (value 0), since sparse-q4 decodes slower than q4 at this density (--pattern tile4 is faster)")
    if encoding in ("sparse-q8", "sparse-f16"):
        return (f"block linears pruned ({r.pattern}), stored at {encoding[-3:]} as bitmask + kept values"
                + (" (tile4-q4 is 4-bit only)" if r.pattern == "tile4" else ""))
    if r.pattern == "neurons" and r.sparsity:
        return f"block linears: MLP channels removed (smaller dense matrices), stored as {encoding}"
    return f"block linears, not pruned: {encoding}" if encoding != "dense" else "block linears, not pruned: F16"


def _edge_reason(name: str, encoding: str, config: dict) -> str:
    what = "token embedding (tied: also the output head)" if name == "token_embd.weight" and config["tied_embeddings"] \
        else ("token embedding" if name == "token_embd.weight" else "output head")
    if encoding == "q8":
        return f"{what}: read whole every token, q8 under a quantized body (zoo convert's rule)"
    return f"{what}: F16" + (" (read one row per token)" if what == "token embedding" else "")


def encodings_card(reports: list[LayerReport], edges: dict[str, str], recipe: Recipe, config: dict) -> tuple[dict, dict]:
    """({encoding: number of matrices}, {encoding: why}) over the block linears, embedding and head, for the card."""
    counts: Counter = Counter()
    reasons: dict[str, list[str]] = {}
    for r in reports:
        counts.update(r.encodings)
    for enc in sorted(counts):
        reasons.setdefault(enc, []).append(_linear_reason(enc, recipe))
    for name in sorted(edges):
        enc = edges[name]
        counts[enc] += 1
        reasons.setdefault(enc, []).append(_edge_reason(name, enc, config))
    order = sorted(counts, key=lambda e: (-counts[e], e))
    return {e: int(counts[e]) for e in order}, {e: "; ".join(reasons[e]) for e in order}


def _metrics(reports: list[LayerReport], files: list[dict]) -> dict:
    kept = sum(r.kept for r in reports)
    total = sum(r.total for r in reports)
    nbytes = sum(r.nbytes for r in reports)
    return {"size_bytes": int(sum(f["size"] for f in files)),
            "bits_per_weight": round(8 * nbytes / total, 4),
            "sparsity": round(1 - kept / total, 6),
            "sparsity_per_layer": [round(1 - r.kept / r.total, 6) for r in reports]}


def _write_card(path: Path, card: dict) -> None:
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
    os.replace(tmp, path)


def compress(src, out_dir: str | Path, recipe: Recipe, *, calib_text: str | Path | None = None,
             eval_text: str | Path | None = None, eval_ctx: int = 512, eval_windows: int | None = 64,
             evaluate: bool = True, base_perplexity: dict | None = None, eval_engine: str = "auto",
             calib_tokens: np.ndarray | None = None, overwrite: bool = False,
             name: str | None = None, progress: Progress | None = None,
             owl_ratios: list[float] | None = None, base_technical: dict | None = None) -> dict:
    """Compress `src` (path or Source) into the artifact `out_dir`; returns the card written.

    With `evaluate`, the card's metrics include the perplexity of the base model (or the given
    `base_perplexity` result) and of the result on the evaluation text under one protocol, and the same
    on the shipped technical text (`base_technical`: its base result), a text of another kind; with
    recovery also the perplexity of the one-shot model before it.
    `calib_tokens` (int [samples, seq_len]) replaces the calibration text, for models without a
    tokenizer (random-weight benchmarks); the card then records no calibration file. `owl_ratios`
    (per-layer outlier ratios for the recipe's M, from `outlier_ratios` on the same calibration)
    skips OWL's dense pass, for sweeps and tuning; with the sensitivity profile it is the per-layer
    errors of `sensitivity.layer_errors` for the same recipe and calibration instead.
    """
    from zoo.evaluate import fixed_blas_threads

    with fixed_blas_threads():
        return _compress(src, out_dir, recipe, calib_text, eval_text, eval_ctx, eval_windows, evaluate,
                         base_perplexity, eval_engine, calib_tokens, overwrite, name, progress, owl_ratios,
                         base_technical)


def _compress(src, out_dir, recipe, calib_text, eval_text, eval_ctx, eval_windows, evaluate, base_perplexity,
              eval_engine, calib_tokens, overwrite, name, progress, owl_ratios=None, base_technical=None) -> dict:
    from zoo import __version__
    from zoo.convert.source import Source, open_source
    from zoo.evaluate import TECHNICAL_TEXT, perplexity, text_path

    recipe = recipe.validated()
    if recipe.recover != "none":
        from .recover import require_torch

        require_torch()  # before any work: a missing extra is one line, not a failure after the calibration pass
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CompressError(f"{out_dir}: already exists (choose another -o or pass --overwrite)")
    source = src if isinstance(src, Source) else open_source(src)
    config = source.config
    calib = None
    if recipe.uses_calibration and calib_tokens is not None:
        tokens = np.asarray(calib_tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.size == 0 or tokens.min() < 0 or tokens.max() >= config["vocab_size"]:
            raise CompressError("calib_tokens must be token ids [samples, seq_len] within the vocabulary")
        calib = Calibration(tokens, None, None, recipe.seed)
    elif recipe.uses_calibration:
        calib = calibration_windows(source.tokenizer_json, recipe.samples - recipe.calib_generated, recipe.seq_len,
                                    recipe.seed, calib_text, config["vocab_size"])
        if recipe.calib_generated:
            from .selfgen import generated_windows

            out_dir.parent.mkdir(parents=True, exist_ok=True)
            calib = calib.with_generated(generated_windows(source, recipe.calib_generated, recipe.seq_len,
                                                           recipe.seed, out_dir.parent, progress))
    ratios = None
    if recipe.profile == "owl" and recipe.sparsity > 0:
        layer_sparsity, ratios = owl_profile(source, calib, recipe, progress, owl_ratios)
    elif recipe.profile == "sensitivity" and recipe.sparsity > 0:
        layer_sparsity, ratios = sensitivity_profile(source, calib, recipe, progress, owl_ratios)
    else:
        layer_sparsity = uniform(config["n_layers"], recipe.sparsity)
    staging = out_dir.parent / f".{out_dir.name}.compress-{os.getpid()}"
    before_dir = out_dir.parent / f".{out_dir.name}.one-shot-{os.getpid()}"  # the model before recovery, measured then removed
    pre_dir = out_dir.parent / f".{out_dir.name}.pre-distill-{os.getpid()}"  # what distillation starts from
    recovering = recipe.recover != "none" and calib is not None
    distilling = recipe.recover in ("distill", "both") and calib is not None
    for leftover in (staging, before_dir, pre_dir):
        shutil.rmtree(leftover, ignore_errors=True)
    # what a killed compress of the same OUT left: its staging dirs and their writers' temporaries (dead pids)
    sweep(out_dir.parent, compress_staging(out_dir.name))
    try:
        out_config = _out_config(config, recipe, layer_sparsity)
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(ArtifactWriter(staging, out_config))
            one_shot = stack.enter_context(ArtifactWriter(before_dir, out_config)) if evaluate and recovering else None
            if one_shot is not None:  # the same recipe and windows without recovery: what recovery is measured against
                stream_compress(source, one_shot, replace(recipe, recover="none"), calib, layer_sparsity, progress)
            streamed = stack.enter_context(ArtifactWriter(pre_dir, out_config)) if distilling else writer
            reports, edges, recoveries = stream_compress(source, streamed, recipe, calib, layer_sparsity, progress)
            distilled = None
            if distilling:
                from .distill import distill

                streamed.finish({"card_version": 1, "name": "pre-distill"})
                pruned = bool(recipe.sparsity) and recipe.pattern != "neurons"
                distilled = distill(source, pre_dir, writer, calib.tokens, recipe.bits, recipe.recover_tokens,
                                    recipe.seed, pruned, recipe.distill_lr, progress)
                shutil.rmtree(pre_dir, ignore_errors=True)
            for w in filter(None, (writer, one_shot)):
                if source.tokenizer_json:
                    w.add_file("tokenizer.json", source.tokenizer_json)
            compression = recipe.card()
            compression["calibration"] = calib.card() if calib is not None else None
            compression["encodings"], compression["encoding_reasons"] = encodings_card(reports, edges, recipe, config)
            if ratios is not None:  # the profile's measured per-layer scores, beside its settings
                key = "outlier_ratios" if recipe.profile == "owl" else "errors"
                compression[recipe.profile][key] = [round(r, 6) for r in ratios]
            if recoveries:
                compression["recovery"].update(_recovery_card(recoveries))
            if distilled is not None:
                compression["recovery"]["distill"].update(distilled.card())
            base_name = name or Path(str(getattr(source, "files", [src])[0])).stem
            card = {"card_version": 1, "name": _card_name(out_dir.name), "architecture": config["arch"],
                    "description": f"{base_name} compressed by zoo: {_summary(recipe)}",
                    "zoo_version": __version__,
                    "base_model": {"name": base_name, "source": Path(str(src if not isinstance(src, Source) else source.files[0])).name,
                                   "sha256": source.sha256},
                    "compression": compression}
            writer.finish(card)
            if one_shot is not None:
                one_shot.finish({**card, "name": card["name"] + "-one-shot", "compression": recipe.card()})
        card = load_yaml((staging / "zoo.yaml").read_bytes(), "zoo.yaml", CompressError)
        metrics = _metrics(reports, card.get("files", []))
        if recovering:  # wall time, so the only line of a recovered card that differs between identical runs
            seconds = sum(r.seconds for r in recoveries) + (distilled.seconds if distilled is not None else 0.0)
            metrics["recovery_seconds"] = round(seconds, 1)
        if evaluate:
            texts = [("perplexity", eval_text, base_perplexity)]
            if text_path(eval_text) != TECHNICAL_TEXT:
                texts.append(("perplexity_technical", TECHNICAL_TEXT, base_technical))
            for key, text, base in texts:
                base = base or perplexity(source, text, eval_ctx, eval_windows, progress)
                result = perplexity(staging, text, eval_ctx, eval_windows, progress, engine=eval_engine)
                metrics[key] = {"base": round(base["perplexity"], 4), "value": round(result["perplexity"], 4)}
                if one_shot is not None:
                    before = perplexity(before_dir, text, eval_ctx, eval_windows, progress, engine=eval_engine)
                    metrics[key]["before_recovery"] = round(before["perplexity"], 4)
                metrics[key]["protocol"] = result["protocol"]
        card["metrics"] = metrics
        _write_card(staging / "zoo.yaml", card)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(before_dir, ignore_errors=True)
        shutil.rmtree(pre_dir, ignore_errors=True)
    return card


def _recovery_card(recoveries: list) -> dict:
    """What block-wise recovery measured: per-block held-out reconstruction errors before/after, steps."""
    return {"steps_per_block": recoveries[0].steps,
            "blocks_replaced": sum(r.replaced for r in recoveries),
            "error_before": [float(f"{r.loss_before:.4g}") for r in recoveries],
            "error_after": [float(f"{r.loss_after:.4g}") for r in recoveries]}


def _card_name(text: str) -> str:
    import re

    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return (name or "model")[:128]


def _summary(r: Recipe) -> str:
    parts = []
    if r.sparsity:
        parts.append(f"{r.method} {r.sparsity:g} {r.pattern}" + (f" {r.profile}" if r.profile != "uniform" else ""))
    parts.append(f"int{r.bits} g{r.group_size} {r.quantizer}" if r.bits < 16 else "f16")
    return ", ".join(parts)
