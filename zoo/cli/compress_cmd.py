"""`zoo compress`, `zoo sweep`, `zoo tune` and `zoo eval`: prune and quantize a model, try levels, measure perplexity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from zoo.cli import options
from zoo.cli.consoles import stderr_console
from zoo.cli.json_out import stdout_to_stderr
from zoo.cli.names import complete_model


def _log(quiet: bool):
    return (lambda _m: None) if quiet else (lambda m: stderr_console().print(f"[dim]{time.strftime('%H:%M:%S')}[/] {m}"))


def _source(src: str, quiet: bool) -> str:
    """The checkpoint or artifact SRC names: a path as is, or NAME[:TAG] / a registry reference resolved to its
    artifact in the store (pulled when missing), as `zoo run` resolves MODEL."""
    from zoo.cli.resolve import Checkpoints, resolve_model

    return str(resolve_model(src, Checkpoints.READ, quiet=quiet))


def _floats(text: str, what: str) -> list[float]:
    from zoo.errors import CompressError

    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CompressError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _recipe(method, sparsity, pattern, profile, bits, group_size, quantizer, samples, seq_len, seed,
            act_order=True, owl_lambda=None, owl_m=None, sensitivity_lambda=None, zero_points=False):
    from zoo.compress import Recipe

    owl = {k: v for k, v in (("owl_lambda", owl_lambda), ("owl_m", owl_m), ("sensitivity_lambda", sensitivity_lambda))
           if v is not None}
    return Recipe(method=method, sparsity=sparsity, pattern=pattern, profile=profile, bits=bits,
                  group_size=group_size, quantizer=quantizer, samples=samples, seq_len=seq_len, seed=seed,
                  act_order=act_order, zero_points=zero_points, **owl)


METHOD = typer.Option("sparsegpt", "--method", "-m", help="magnitude | wanda | sparsegpt.")
PATTERN = typer.Option("unstructured", "--pattern",
                       help="unstructured | 2:4 | 4:8 | neurons (MLP channels) | tile4 (4-row tiles share columns, "
                            "K of every 128 kept: sparsity 0.5, 0.625, 0.75 or 0.875; at 4 bits stored as tile4-q4).")
PROFILE = typer.Option("uniform", "--profile", help="Per-layer sparsity: uniform | owl | sensitivity (measured per-layer pruning error).")
GROUP = options.group_size(128, "Quantization group size (multiple of 64 when sparse).")
QUANTIZER = typer.Option("rtn", "--quantizer", help="rtn | gptq.")
ACT_ORDER = typer.Option(True, "--act-order/--no-act-order",
                         help="GPTQ: quantize columns by decreasing Hessian diagonal (static groups); with "
                              "SparseGPT, a second sweep under its mask (--no-act-order: one joint sweep).")
ZERO_POINTS = typer.Option(False, "--zero-points",
                           help="4 bits stored as plain q4 (in a sweep or tune: the points stored so): a zero point "
                                "per group, so each group's grid spans its own min to max instead of ±absmax: 16 "
                                "levels, not 15, where the weights are lopsided.")
OWL_LAMBDA = typer.Option(None, "--owl-lambda", help="OWL: half-width of the per-layer sparsity range (default: Recipe's).")
OWL_M = typer.Option(None, "--owl-m", help="OWL: a weight is an outlier above M x its layer's mean Wanda score.")
SENS_LAMBDA = typer.Option(None, "--sensitivity-lambda",
                           help="sensitivity: half-width of the per-layer sparsity range (default: Recipe's).")
CALIB = typer.Option(None, "--calib", help="Calibration text: a file, or a shipped one by name (builtin: Austen; "
                     "smollm2-written: text SmolLM2 wrote itself). Repeat to mix texts: the windows split evenly "
                     "between them. Default: builtin and smollm2-written, half each.")
SAMPLES = typer.Option(128, "--samples", min=1, help="Calibration windows.")
SEQ_LEN = typer.Option(512, "--seq-len", min=1, help="Tokens per calibration window.")
SEED = options.seed(0, "Seed for choosing calibration windows.")
EVAL_TEXT = typer.Option(None, "--eval-text", help="Evaluation text (default: the shipped one, zoo/data/evaluation.txt).")
EVAL_WINDOWS = typer.Option(64, "--eval-windows", min=0, help="Evaluate on the first N windows (0 = the whole text).")
CTX = options.ctx(512, "Evaluation window length in tokens.")
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress on stderr.")
CALIB_GENERATED = typer.Option(0, "--calib-generated", min=0,
                               help="Of the --samples calibration windows, how many the model writes itself "
                                    "(sampled, seeded): calibration beyond one text's style.")
RECOVER = typer.Option("none", "--recover",
                       help="none | blockwise: after pruning/quantizing each block, train its kept weights and scales "
                            "(masks fixed) to match the dense block on the calibration windows | distill: train the "
                            "whole compressed model on the dense model's next-token distributions (KL) | both: "
                            "blockwise, then distill (needs zoo-llm\\[train]).")
RECOVER_LR = typer.Option(None, "--recover-lr",
                          help="Block-wise recovery's Adam learning rate, in units of each weight's mean quantization "
                               "step (default 0.04, for pruned weights; q4 with zero points, whose one-shot error is "
                               "small, wants ~0.003).")
RECOVER_TOKENS = typer.Option(131072, "--recover-tokens", min=1,
                              help="Calibration tokens each block's recovery, and distillation, trains on "
                                   "(repeats counted).")


def compress_cmd(
    src: str = typer.Argument(..., metavar="SRC",
        help="GGUF file, Hugging Face checkpoint dir, dense zoo artifact dir, or "
             "its NAME[:TAG] in the store."),
    out: Path = options.out(..., "--output", "-o", help="Artifact directory to write (must not exist)."),
    method: str = METHOD,
    sparsity: float = typer.Option(None, "--sparsity", "-s", help="Fraction of weights to prune (N:M implies it)."),
    pattern: str = PATTERN,
    profile: str = PROFILE,
    bits: int = typer.Option(16, "--bits", "-b", help="16 (f16) | 8 | 4."),
    group_size: int = GROUP,
    quantizer: str = QUANTIZER,
    act_order: bool = ACT_ORDER,
    zero_points: bool = ZERO_POINTS,
    owl_lambda: float = OWL_LAMBDA,
    owl_m: float = OWL_M,
    sensitivity_lambda: float = SENS_LAMBDA,
    calib: list[str] = CALIB,
    samples: int = SAMPLES,
    seq_len: int = SEQ_LEN,
    seed: int = SEED,
    calib_generated: int = CALIB_GENERATED,
    recover: str = RECOVER,
    recover_tokens: int = RECOVER_TOKENS,
    recover_lr: float = RECOVER_LR,
    eval_text: Path = EVAL_TEXT,
    eval_windows: int = EVAL_WINDOWS,
    ctx: int = CTX,
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip measuring perplexity (the card says so)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Prune and/or quantize a model layer by layer and write an artifact with a measured card.

    Examples:
      zoo compress model.gguf -o smol-sgpt50 --method sparsegpt --sparsity 0.5
      zoo compress model.gguf -o smol-24-q4 --method wanda --pattern 2:4 --bits 4 --quantizer gptq
      zoo compress ./llama-dir -o llama-owl70 --method wanda --sparsity 0.7 --profile owl --samples 64
      zoo compress model.gguf -o smol-sens70 --method sparsegpt --sparsity 0.7 --profile sensitivity
      zoo compress model.gguf -o smol-tile75 --method sparsegpt --pattern tile4 --sparsity 0.75 --bits 4 --quantizer gptq
      zoo compress model.gguf -o smol-tile50r --method sparsegpt --pattern tile4 --sparsity 0.5 --bits 4 --quantizer gptq --recover blockwise
    """
    from dataclasses import replace

    from zoo.cli.long_work import step_progress
    from zoo.compress import compress

    if bits not in (16, 8, 4):
        raise typer.BadParameter("must be 16, 8 or 4", param_hint="--bits")
    recipe = _recipe(method, sparsity if sparsity is not None else (None if ":" in pattern else 0.0), pattern, profile,
                     bits, group_size, quantizer, samples, seq_len, seed, act_order, owl_lambda, owl_m,
                     sensitivity_lambda, zero_points)
    recipe = replace(recipe, recover=recover, recover_tokens=recover_tokens, calib_generated=calib_generated,
                     **({} if recover_lr is None else {"recover_lr": recover_lr}))
    source = _source(src, quiet)
    t0 = time.monotonic()
    # on a terminal, a bar per phase with ETA (on stderr, also with --json)
    with stdout_to_stderr(as_json), step_progress(quiet, _log(False)) as progress:
        card = compress(source, out, recipe, calib_text=calib, eval_text=eval_text, eval_ctx=ctx,
                        eval_windows=eval_windows or None, evaluate=not no_eval, overwrite=overwrite, progress=progress)
    seconds = time.monotonic() - t0
    if as_json:
        print(json.dumps({"path": str(out), "seconds": round(seconds, 1), "card": card}))
        return
    m = card["metrics"]
    line = f"wrote {out}: {m['size_bytes'] / 1e6:.1f} MB, {m['bits_per_weight']:.2f} bits/weight, sparsity {m['sparsity']:.3f}"
    for key, what in (("perplexity", "perplexity"), ("perplexity_technical", "technical text")):
        p = m.get(key)
        if p:
            before = f" (one-shot {p['before_recovery']:.3f})" if p.get("before_recovery") is not None else ""
            line += f", {what} {p['base']:.3f} -> {p['value']:.3f}{before}"
    print(line + f" ({seconds:.0f}s)")


def sweep_cmd(
    src: str = typer.Argument(..., metavar="SRC",
        help="GGUF file, Hugging Face checkpoint dir, dense zoo artifact dir, or "
             "its NAME[:TAG] in the store."),
    method: str = METHOD,
    sparsity: str = typer.Option("0.3,0.5,0.7,0.9", "--sparsity", "-s", help="Comma-separated sparsities."),
    bits: str = typer.Option("4,8", "--bits", "-b", help="Comma-separated bit widths (16, 8, 4)."),
    out: Path = options.out(None, "--output", "-o", help="Keep artifacts and sweep.{csv,json,png} here."),
    pattern: str = PATTERN,
    profile: str = PROFILE,
    group_size: int = GROUP,
    quantizer: str = QUANTIZER,
    act_order: bool = ACT_ORDER,
    zero_points: bool = ZERO_POINTS,
    owl_lambda: float = OWL_LAMBDA,
    owl_m: float = OWL_M,
    sensitivity_lambda: float = SENS_LAMBDA,
    calib: list[str] = CALIB,
    samples: int = SAMPLES,
    seq_len: int = SEQ_LEN,
    seed: int = SEED,
    eval_text: Path = EVAL_TEXT,
    eval_windows: int = EVAL_WINDOWS,
    ctx: int = CTX,
    speed: bool = typer.Option(False, "--speed", help="Also measure decode tokens/s of each point on the runtime "
                                                     "(llama.cpp's own runtime for its peers)."),
    peers: str = typer.Option("", "--peers", help="Comma-separated llama.cpp quantizations of the same base to add as "
                                                  "points: Q4_0, Q4_K_M, Q3_K_M, Q2_K (needs llama-cpp-python)."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Compress and evaluate every (sparsity, bits) point; table, CSV/JSON, PNG chart, Pareto front.

    Examples:
      zoo sweep model.gguf --method wanda --sparsity 0.3,0.5,0.7 --bits 4,8 -o sweep-wanda
      zoo sweep model.gguf --method sparsegpt --sparsity 0.5 --bits 4 --quantizer gptq --json
      zoo sweep model.gguf --method sparsegpt --pattern tile4 --sparsity 0.5 --bits 4 --peers Q4_0,Q3_K_M,Q2_K
    """
    from zoo.compress.peers import parse_peers
    from zoo.compress.sweep import sweep

    bit_list = [int(b) for b in _floats(bits, "--bits")]
    if any(b not in (16, 8, 4) for b in bit_list):
        raise typer.BadParameter("each must be 16, 8 or 4", param_hint="--bits")
    recipe = _recipe(method, 0.0, pattern, profile, 16, group_size, quantizer, samples, seq_len, seed, act_order,
                     owl_lambda, owl_m, sensitivity_lambda, zero_points)
    with stdout_to_stderr(as_json):
        result = sweep(_source(src, quiet), recipe, _floats(sparsity, "--sparsity"), bit_list, out, calib_text=calib,
                       eval_text=eval_text, eval_ctx=ctx, eval_windows=eval_windows or None, speed=speed,
                       peers=parse_peers(peers) if peers else None, progress=_log(quiet))
    if as_json:
        print(json.dumps(result))
        return
    from rich.console import Console  # rich only when a table is drawn, not at start-up
    from rich.table import Table

    table = Table(title=f"{method} {pattern} ({profile}); base perplexity {result['base_perplexity']:.3f}")
    for col in ("sparsity", "bits", "perplexity", "x base", "MB", "bits/weight", "decode tok/s", "Pareto"):
        table.add_column(col, justify="right")
    for p in result["points"]:
        table.add_row(f"{p['sparsity']:g}" if not p.get("peer") else "llama.cpp", str(p["bits"]), f"{p['perplexity']:.3f}", f"{p['ratio']:.3f}",
                      f"{p['size_bytes'] / 1e6:.1f}", f"{p['bits_per_weight']:.2f}",
                      f"{p['decode_tps']:.1f}" if p["decode_tps"] else "-", "*" if p["pareto"] else "")
    Console().print(table)
    if out is not None:
        print(f"wrote {out}/sweep.csv, sweep.json, sweep.png")


def tune_cmd(
    src: str = typer.Argument(..., metavar="SRC",
        help="GGUF file, Hugging Face checkpoint dir, dense zoo artifact dir, or "
             "its NAME[:TAG] in the store."),
    out: Path = options.out(..., "--output", "-o", help="Where to write the chosen artifact (must not exist)."),
    max_ppl_ratio: float = typer.Option(1.3, "--max-ppl-ratio", callback=options.finite,
                                        help="Budget: perplexity at most this many times the base model's."),
    objective: str = typer.Option("decode", "--objective", help="decode (fastest decode within budget) | size."),
    patterns: str = typer.Option("tile4,unstructured", "--patterns", help="Comma-separated patterns to try."),
    bits: str = typer.Option("4", "--bits", "-b", help="Comma-separated bit widths to try (4, 8)."),
    method: str = METHOD,
    quantizer: str = typer.Option("gptq", "--quantizer", help="rtn | gptq."),
    zero_points: bool = ZERO_POINTS,
    calib: list[str] = CALIB,
    samples: int = typer.Option(32, "--samples", min=1, help="Calibration windows."),
    seq_len: int = SEQ_LEN,
    seed: int = SEED,
    calib_generated: int = CALIB_GENERATED,
    recover: str = RECOVER,
    recover_tokens: int = RECOVER_TOKENS,
    eval_windows: int = typer.Option(32, "--eval-windows", min=0, help="Evaluate on the first N windows (0 = all)."),
    ctx: int = CTX,
    work: Path = options.out(None, "--work", help="Where measured points, the table and the chart live "
                                                  "(default OUT.tune beside OUT); a rerun resumes from it."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Try (pattern, sparsity, bits) points coarse to fine and keep the best one within a perplexity budget.

    Examples:
      zoo tune model.gguf -o smol-best --max-ppl-ratio 1.3 --objective decode
      zoo tune model.gguf -o smol-small --max-ppl-ratio 2 --objective size --patterns unstructured --bits 4,8
      zoo tune model.gguf -o smol-zp --max-ppl-ratio 1.3 --zero-points
    """
    from dataclasses import replace

    from zoo.compress.tune import tune
    from zoo.errors import CompressError

    recipe = _recipe(method, 0.0, "unstructured", "uniform", 4, 128, quantizer, samples, seq_len, seed,
                     zero_points=zero_points)
    recipe = replace(recipe, recover=recover, recover_tokens=recover_tokens, calib_generated=calib_generated)
    bit_list = [int(b) for b in _floats(bits, "--bits")]
    with stdout_to_stderr(as_json):
        result = tune(_source(src, quiet), out, recipe, max_ratio=max_ppl_ratio, objective=objective,
                      patterns=[p.strip() for p in patterns.split(",") if p.strip()], bits=bit_list, work=work,
                      eval_ctx=ctx, eval_windows=eval_windows or None, calib_text=calib, progress=_log(quiet))
    best, q4 = result["best"], result["q4"]
    if as_json:
        print(json.dumps(result))
    else:
        from rich.console import Console  # rich only when a table is drawn, not at start-up
        from rich.table import Table

        table = Table(title=f"zoo tune: budget {max_ppl_ratio:g}x base perplexity {result['base_perplexity']:.3f}, "
                            f"objective {objective}")
        for col in ("pattern", "sparsity", "bits", "x base", "x base (technical)", "MB", "decode tok/s", "in budget"):
            table.add_column(col, justify="right")
        for p in result["points"]:
            table.add_row(p["pattern"], f"{p['sparsity']:g}", str(p["bits"]), f"{p['ratio']:.3f}",
                          f"{p['technical_ratio']:.3f}", f"{p['size_bytes'] / 1e6:.1f}",
                          f"{p['decode_tps']:.1f}" if p["decode_tps"] else "-",
                          ("chosen" if best and p["key"] == best["key"] else "yes") if p["within_budget"] else "")
        Console().print(table)
    if best is None:
        raise CompressError(f"no point is within {max_ppl_ratio:g}x the base perplexity (table above and in "
                            f"{work or out.with_name(out.name + '.tune')}/tune.csv)")
    if not as_json:
        faster = (f", {best['decode_tps'] / q4['decode_tps']:.2f}x the q4 point's decode"
                  if q4 and best["decode_tps"] and q4["decode_tps"] else "")
        print(f"wrote {out}: {best['key']}, perplexity {best['ratio']:.3f}x base, {best['size_bytes'] / 1e6:.1f} MB{faster}")


def eval_cmd(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="Artifact dir (or store name), GGUF file or Hugging Face dir."),
    text: str = typer.Option(None, "--text", help="UTF-8 text file, or a shipped text: prose (the default, Persuasion) or technical (the Python reference)."),
    ctx: int = CTX,
    max_windows: int = typer.Option(0, "--max-windows", min=0, help="Only the first N windows (0 = all)."),
    engine: str = typer.Option("auto", "--engine", help="auto | runtime | reference."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Perplexity over non-overlapping windows of a text; the protocol is printed with the result.

    Examples:
      zoo eval ./smol-sgpt50 --ctx 512
      zoo eval model.gguf --text book.txt --max-windows 32 --json
    """
    from zoo.cli.resolve import Checkpoints, resolve_model
    from zoo.evaluate import perplexity

    # a checkpoint is read as is by the reference engine; the runtime engine needs it converted
    with stdout_to_stderr(as_json):
        path = resolve_model(model, Checkpoints.CONVERT if engine == "runtime" else Checkpoints.READ, quiet=quiet)
        r = perplexity(path, text, ctx, max_windows or None, _log(quiet), engine=engine)
    if as_json:
        print(json.dumps(r))
        return
    print(f"perplexity {r['perplexity']:.4f} ({r['windows']} windows of {r['ctx']} tokens, {r['tokens_scored']} scored, "
          f"text {r['text']} sha256 {r['text_sha256'][:12]}, {r['engine']})")


def register(app: typer.Typer) -> None:
    """Attach compress, sweep, tune and eval."""
    app.command("compress")(compress_cmd)
    app.command("sweep")(sweep_cmd)
    app.command("tune")(tune_cmd)
    app.command("eval")(eval_cmd)
