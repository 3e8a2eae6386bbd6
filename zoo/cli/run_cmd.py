"""`zoo run` (generate or chat) and `zoo bench` (prefill/decode tokens/s) on a local artifact."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from zoo.cli import options
from zoo.cli.consoles import stderr_console
from zoo.cli.names import complete_model


def _load(model: str, threads: int | None, ctx: int | None, quiet: bool, verify: bool = True, yes: bool = False):
    """Resolve (a catalog build asked about first unless `yes`), verify (the card's sha256, cached), validate and
    load (the kernels are prepared later by `_warm`, only those a request needs)."""
    from zoo.cli.resolve import resolve_model
    from zoo.runtime import load

    path = resolve_model(model, yes=yes)  # its notes go to stderr, also with --json
    t0 = time.perf_counter()
    step = f"loading {path.name} ({'verifying, ' if verify else ''}validating)"
    with stderr_console().status(step, spinner="dots") if not quiet else _Null():
        m, tok = load(path, ctx=ctx, threads=threads, verify=verify)
    t1 = time.perf_counter()
    return m, tok, {"load_s": t1 - t0, "validate_load_s": t1 - t0, "kernels_s": 0.0, "warm": set()}


def _with_stdin(prompt: str | None) -> str | None:
    """The prompt with piped stdin: stdin alone, or stdin then PROMPT joined by a space, as `ollama run` joins them
    (`cat notes.txt | zoo run MODEL "Summarize this"`); PROMPT as given when stdin is a terminal."""
    from zoo.cli import chat

    if sys.stdin is None or sys.stdin.isatty():
        return prompt
    if prompt is None:
        return chat.piped_prompt()
    piped = sys.stdin.read()
    return f"{piped} {prompt}" if piped.strip() else prompt


def _warm(m, times: dict, prefill: bool, decode: bool, quiet: bool) -> None:
    """Run the prefill (several tokens) and/or decode (one token) path once, as a visible step: numba
    compiles on a first run and loads its cache afterwards. Only what the request needs: a one-token
    prompt with one new token never loads the prefill kernels (warm start to first token)."""
    need = [kind for kind, wanted in (("prefill", prefill), ("decode", decode)) if wanted and kind not in times["warm"]]
    if not need:
        return
    t0 = time.perf_counter()
    with stderr_console().status("preparing kernels (compiles on the first run, cached afterwards)") if not quiet else _Null():
        for kind in need:
            m.forward([0, 0] if kind == "prefill" else [0], 0)
            times["warm"].add(kind)
    dt = time.perf_counter() - t0
    times["kernels_s"] += dt
    times["load_s"] += dt


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def run(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="NAME[:TAG], registry reference (s3://, hf://, http(s)://, oci://), "
             "artifact directory, or GGUF file / Hugging Face dir (converted, cached)."),
    prompt: str = typer.Argument(None, metavar="PROMPT", callback=options.utf8,
        help="Prompt; omit for an interactive chat."),
    max_tokens: int = typer.Option(None, "--max-tokens", "-n", min=1,
                                   help="Maximum new tokens (default 256; the chat: until EOS or the context)."),
    temperature: float = options.temperature(),
    top_k: int = typer.Option(40, "--top-k", min=0, help="Keep the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(0.9, "--top-p", callback=options.finite, help="Nucleus sampling mass (1 = off)."),
    repeat_penalty: float = typer.Option(1.0, "--repeat-penalty", callback=options.finite,
                                         help="Repetition penalty (1 = off)."),
    seed: int = options.seed(None, "Random seed for reproducible sampling."),
    threads: int = options.threads(),
    ctx: int = options.ctx(None, "Context length (default: the model's, at most 4096)."),
    stop: list[str] = typer.Option(None, "--stop", callback=options.utf8, help="Stop string (repeatable)."),
    system: str = typer.Option(None, "--system", callback=options.utf8, help="System message for the chat template."),
    raw: bool = typer.Option(False, "--raw", help="Send PROMPT as is, without the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of streaming."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print load time, tokens/s and peak RSS."),
    no_verify: bool = options.no_verify(),
    yes: bool = options.yes(),
) -> None:
    """Generate text with a model, streaming tokens; no PROMPT starts an interactive chat.

    Piped stdin is one prompt, followed by PROMPT when one is given (as `ollama run` joins them). A catalog
    name that is built from its recipe is asked about first above 10 minutes or 1 GB, as `zoo pull` asks.

    Examples:
      zoo run ./smollm2-q4 "Write a haiku about sparse matrices" --max-tokens 64
      zoo run ./smollm2-q4 "2+2=" --temperature 0 --json
      echo "Why is the sky blue?" | zoo run ./smollm2-q4
      cat notes.txt | zoo run ./smollm2-q4 "Summarize the text above."
      zoo run SmolLM2.Q4_1.gguf "Hi"  # converted once, then cached
      zoo run ./smollm2-q4            # chat; /? lists commands, /bye or Ctrl-D to quit, Ctrl-C stops an answer
    """
    from zoo.card import human_size
    from zoo.cli import chat
    from zoo.config import zoo_home
    from zoo.errors import RuntimeModelError
    from zoo.runtime import SamplingParams, Session
    from zoo.rss import peak_rss_mb

    params = SamplingParams(temperature, top_k, top_p, repeat_penalty, seed)
    params.check()
    prompt = _with_stdin(prompt)
    if prompt is None and as_json:
        raise RuntimeModelError("--json needs a PROMPT (the interactive chat streams text)")
    m, tok, times = _load(model, threads, ctx or 4096, quiet=as_json, verify=not no_verify, yes=yes)
    if tok is None:
        raise RuntimeModelError(f"{model}: the artifact has no tokenizer.json, so it cannot take text (zoo bench works)")
    session = Session(m, tok)
    use_template = bool(tok.chat_template) and not raw
    messages = [{"role": "system", "content": system}] if system else []

    def stats(res) -> None:
        if verbose:
            stderr_console().print(f"load: {times['load_s']:.2f} s (kernels {times['kernels_s']:.2f} s)  "
                      f"prompt: {res.prompt_tokens} tok, {res.prefill_tps:.1f} tok/s  "
                      f"decode: {res.generated_tokens} tok, {res.decode_tps:.1f} tok/s  "
                      f"peak RSS: {human_size(peak_rss_mb() * 2**20)}  ({res.finish_reason})")

    def turn(text: str):
        if use_template:
            messages.append({"role": "user", "content": text})
            ids = session.chat_ids(messages)
        else:
            ids = tok.encode(text)
        out = (lambda s: None) if as_json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        if not session.history:  # warming writes cache positions 0-1: only before a history exists
            n = len(session.pending) + len(ids)
            _warm(m, times, n > 1, n == 1 or max_tokens > 1, quiet=as_json)
        res = session.generate(ids, max_tokens, params, stop, on_text=out)
        if use_template:
            messages.append({"role": "assistant", "content": res.text})
        return res

    if prompt is not None:
        max_tokens = max_tokens or 256
        res = turn(prompt)
        if as_json:
            typer.echo(json.dumps({"text": res.text, "tokens": res.tokens, "prompt_tokens": res.prompt_tokens,
                                   "generated_tokens": res.generated_tokens, "finish_reason": res.finish_reason,
                                   "prefill_tps": res.prefill_tps, "decode_tps": res.decode_tps,
                                   "load_s": times["load_s"], "peak_rss_mb": peak_rss_mb()}))
        else:
            sys.stdout.write("\n")
            stats(res)
        if res.finish_reason == "interrupted":
            raise typer.Exit(130)
        return
    def prepare(n_prompt: int) -> None:
        _warm(m, times, n_prompt > 1, True, quiet=False)

    path = m.path
    info = chat.model_info(path)
    chat.Chat(session, params, info.get("name") or path.name, info, num_predict=max_tokens or -1, system=system,
              template=use_template, stop=stop, prepare=prepare, report=stats).run(zoo_home() / "history")


def bench(
    models: list[str] = typer.Argument(..., metavar="MODEL", autocompletion=complete_model,
        help="Model names, artifact directories, GGUF files or HF dirs "
             "(as zoo run); several are compared side by side."),
    threads: int = options.threads(),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", min=1, help="Prompt length for prefill."),
    gen_tokens: int = typer.Option(128, "--gen-tokens", min=1, help="Tokens to decode."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Repeat and keep the best (noisy shared machines)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    yes: bool = options.yes(),
) -> None:
    """Measure prefill and decode tokens/s, load time and peak RSS; with several models, compare them.

    Each model of a comparison runs in its own process (so load time and peak RSS are its own) and the
    table adds its size on disk, bits per weight and the perplexity its card records.

    Examples:
      zoo bench ./smollm2-q4 --threads 2
      zoo bench ./llama-7b-sparse90-q4 --json --repeats 3
      zoo bench smollm2-135m-instruct-f16 smollm2-135m-instruct-sparse50-int4
    """
    if len(models) > 1:
        return _compare(models, threads, prompt_tokens, gen_tokens, repeats, as_json, yes)
    from zoo.card import human_size
    from zoo.runtime.bench import measure

    m, tok, times = _load(models[0], threads, prompt_tokens + gen_tokens, quiet=as_json, yes=yes)
    _warm(m, times, True, True, quiet=as_json)
    _warn_if_busy(threads)
    with stderr_console().status("benchmarking") if not as_json else _Null():
        r = measure(m, tok, prompt_tokens, gen_tokens, repeats)
    r["load_s"] = times["load_s"]
    r["threads"] = threads or __import__("numba").get_num_threads()
    if as_json:
        typer.echo(json.dumps(r))
    else:
        stderr_console().print(f"prefill {r['prefill_tps']:.1f} tok/s ({prompt_tokens} tokens)  decode {r['decode_tps']:.1f} tok/s "
                  f"({gen_tokens} tokens)  load {r['load_s']:.2f} s  peak RSS {human_size(r['peak_rss_mb'] * 2**20)}  "
                  f"threads {r['threads']}")


def _warn_if_busy(threads: int | None) -> None:
    """Say on stderr when other processes occupy CPUs the benchmark needs (its speeds would be wrong)."""
    from zoo.runtime.bench import busy_warning, other_load

    cpus = os.cpu_count() or 1
    note = busy_warning(other_load(), cpus, threads or __import__("numba").get_num_threads())
    if note:
        stderr_console().print(f"zoo: warning: {note}", soft_wrap=True)  # one line, also when a parent reads it


def card_metrics(path: Path) -> dict:
    """bits_per_weight and perplexity from an artifact's card (None when absent), the card parsed within
    the readers' limits (CardError on a hostile or malformed one)."""
    from zoo.errors import CardError
    from zoo.untrusted import MAX_YAML_BYTES, load_yaml

    card_path = path / "zoo.yaml"
    card = {}
    if card_path.is_file():
        with open(card_path, "rb") as f:
            card = load_yaml(f.read(MAX_YAML_BYTES + 1), f"{path.name}/zoo.yaml", CardError)
    metrics = card.get("metrics") if isinstance(card, dict) else None
    metrics = metrics if isinstance(metrics, dict) else {}
    ppl = metrics.get("perplexity")
    return {"bits_per_weight": metrics.get("bits_per_weight"),
            "perplexity": ppl.get("value") if isinstance(ppl, dict) else None}


def _compare(models: list[str], threads, prompt_tokens: int, gen_tokens: int, repeats: int, as_json: bool,
             yes: bool) -> None:
    """`zoo bench A B ...`: each model benchmarked in a child process, then one table (ratios against A)."""
    import subprocess

    from rich.console import Console
    from rich.table import Table

    from zoo.card import human_size
    from zoo.cli.resolve import resolve_model
    from zoo.errors import RuntimeModelError

    rows = []
    for model in models:
        path = resolve_model(model, yes=yes)
        cmd = [sys.executable, "-m", "zoo.cli.main", "bench", str(path), "--json", "--prompt-tokens",
               str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--repeats", str(repeats)]
        if threads:
            cmd += ["--threads", str(threads)]
        with stderr_console().status(f"benchmarking {model}") if not as_json else _Null():
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeModelError(f"{model}: benchmark failed: {last.removeprefix('zoo: error: ')}")
        for line in proc.stderr.splitlines():  # the child's busy-machine warning, sampled just before it measured
            if line.startswith("zoo: warning:"):
                stderr_console().print(f"zoo: warning: {model}: {line.removeprefix('zoo: warning: ')}")
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        rows.append({"model": model, "path": str(path), "size_bytes": size, **card_metrics(path),
                     **json.loads(proc.stdout)})
    if as_json:
        typer.echo(json.dumps(rows))
        return
    base = rows[0]

    def cell(r: dict, text: str, ratio: float | None, word: str) -> str:
        return text if r is base or ratio is None else f"{text} ({ratio:.2f}x{' ' + word if word else ''})"

    table = Table("", *(r["model"] for r in rows), box=None)  # one column per model, ratios against the first
    table.add_row("size on disk", *(cell(r, human_size(r["size_bytes"]), base["size_bytes"] / r["size_bytes"],
                                         "smaller") for r in rows))
    table.add_row("bits/weight", *(str(r["bits_per_weight"] or "-") for r in rows))
    table.add_row("perplexity (card)", *(str(r["perplexity"] or "not measured") for r in rows))
    table.add_row("decode tok/s", *(cell(r, f"{r['decode_tps']:.1f}", r["decode_tps"] / base["decode_tps"], "")
                                    for r in rows))
    table.add_row("prefill tok/s", *(cell(r, f"{r['prefill_tps']:.1f}", r["prefill_tps"] / base["prefill_tps"], "")
                                     for r in rows))
    table.add_row("peak RSS", *(human_size(r["peak_rss_mb"] * 2**20) for r in rows))
    Console().print(table)
    stderr_console().print(f"{prompt_tokens}-token prefill, {gen_tokens}-token greedy decode, best of {repeats}, "
              f"{base.get('threads')} threads, each model in its own process")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("bench")(bench)
