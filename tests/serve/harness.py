"""Test helpers for `zoo serve`: a tiny chat model with a real tokenizer, and the real server in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from zoo.format import ArtifactWriter, encode, expected_tensors
from zoo.synthetic import TINY_LLAMA, random_tensor

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).parents[1] / "runtime" / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

TEMPLATE = tiny.TEMPLATE
ZOO = [sys.executable, "-P", "-m", "zoo.cli.main"]


# dims where every linear layer's inputs are whole groups of 128: q4 with group 128 is the encoding whose
# batched (matmul) kernel quantizes activations as the one-token (matvec) kernel does on AVX-512
WIDE = dict(dim=128, hidden_dim=256, n_heads=4, n_kv_heads=2, head_dim=32)


def write_chat_model(path: Path, seed: int = 0, max_seq_len: int = 64, eos: bool = True, wide: bool = False) -> Path:
    """A tiny random Llama (untied head, so greedy text varies) with tests/runtime's trained BPE tokenizer
    and chat template; EOS is <|im_end|>, or none with eos=False (it then always runs to max tokens).
    wide=True: WIDE's dims with q4/group-128 linear layers (else q8/group 32)."""
    from tokenizers import Tokenizer

    tj = tiny.tokenizer_json()
    vocab = Tokenizer.from_str(tj.decode()).get_vocab_size()
    config = dict(TINY_LLAMA, **(WIDE if wide else {}), vocab_size=vocab, n_layers=2, max_seq_len=max_seq_len,
                  tied_embeddings=False,
                  tokenizer={"bos_token_id": None, "eos_token_ids": [2] if eos else [], "add_bos": False,
                             "chat_template": TEMPLATE})
    rng = np.random.default_rng(seed)
    with ArtifactWriter(path, config) as w:
        for name, shape in expected_tensors(config).items():
            t = random_tensor(rng, name, shape, 0.0)
            if len(shape) == 1 or name == "token_embd.weight":
                w.add(name, encode(t, "dense", dtype="F16"))
            else:
                w.add(name, encode(t, "q4", group_size=128) if wide else encode(t, "q8", group_size=32))
        w.add_file("tokenizer.json", tj)
        return w.finish({"card_version": 1, "name": path.name, "architecture": "llama", "license": "apache-2.0"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`zoo serve` on a free loopback port in its own process; its stderr goes to a file the tests read."""

    def __init__(self, env: dict, log: Path, *args: str, api_key: str | None = None) -> None:
        self.env, self.log_path, self.args, self.api_key = env, log, args, api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self, timeout: float = 120) -> "Server":
        cmd = [*ZOO, "serve", "--port", str(self.port), "--threads", "1", *self.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=self.env,
                                         preexec_fn=default_sigint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zoo serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/api/version", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"zoo serve did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return self.log()
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the server log within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def default_sigint() -> None:
    """In the child before exec: SIGINT at its default, as an interactive shell starts a program. A suite launched
    in the background by a non-interactive shell (`cmd &`) runs with SIGINT ignored, which survives exec: the
    Ctrl-C tests then met a zoo that could not be interrupted (exit 0 instead of 130, a REPL that ignored ^C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def zoo_env(home: Path) -> dict:
    """The environment of a zoo process that sees only the test store (no user config, no registry)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "ZOO_CATALOG", "HF_ENDPOINT", "ZOO_API_KEY")}
    return {**env, "ZOO_HOME": str(home), "ZOO_CONFIG": str(home / "no-config.yaml"), "ZOO_DEBUG": ""}
