"""`zoo run MODEL`'s chat REPL, driven through a pseudo-terminal (pexpect) as a person would type: commands
that never reach the model, \"\"\" and pasted multi-line messages, Ctrl-C, history across runs, piped stdin;
and the generation limit behind it (max_tokens=None: until EOS or the context is full)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from zoo.errors import RuntimeModelError
from zoo.runtime import SamplingParams, Session, load

_spec = importlib.util.spec_from_file_location("zoo_tests_serve_harness",
                                               Path(__file__).parent / "serve" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

READY = "Send a message (/? for help)"  # the empty prompt's placeholder: the REPL waits for input
START_S = 180  # load + (on a cold numba cache) the first compile of the kernels


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """`chat`: EOS-less tiny chat model (every answer runs to num_predict or the context), context 16384."""
    root = tmp_path_factory.mktemp("chat-repl")
    return {"chat": harness.write_chat_model(root / "tiny-chat", seed=1, max_seq_len=16384, eos=False)}


class Repl:
    """`zoo run MODEL ARGS` in a pseudo-terminal (80x200), ZOO_HOME=home; every line typed waits for the prompt."""

    def __init__(self, home: Path, model: Path, *args: str) -> None:
        env = {**harness.zoo_env(home), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}  # no terminal answers CPR
        self.child = pexpect.spawn(harness.ZOO[0], [*harness.ZOO[1:], "run", str(model), "--threads", "1", *args],
                                   env=env, encoding="utf-8", codec_errors="replace", timeout=START_S,
                                   dimensions=(80, 200), preexec_fn=harness.default_sigint)
        self.idle = False  # True between seeing an empty prompt and typing something
        self.ready(START_S)

    def ready(self, timeout: float = 60) -> None:
        """Wait for an empty prompt (unless one was seen and nothing typed since)."""
        if not self.idle:
            self.child.expect_exact(READY, timeout=timeout)
            self.idle = True

    def send(self, keys: str) -> None:
        self.child.send(keys)
        self.idle = False

    def control(self, key: str) -> None:
        self.child.sendcontrol(key)
        self.idle = False

    def type(self, line: str) -> None:
        """Type `line` and Enter at the next empty prompt."""
        self.ready()
        self.send(line + "\r")

    def expect(self, text: str, timeout: float = 60) -> str:
        """Wait for `text` in the output; returns the output before it, escape sequences removed."""
        self.child.expect_exact(text, timeout=timeout)
        return plain(self.child.before)

    def show(self, section: str = "info") -> str:
        """The output of `/show SECTION` (all sections for "")."""
        self.type(f"/show {section}".strip())
        self.expect({"": "Model", "info": "Model", "parameters": "Parameters", "system": "System"}[section])
        self.ready()
        return plain(self.child.before)

    def turns(self) -> tuple[int, int]:
        """(turns, tokens in the context) from /show info."""
        m = re.search(r"conversation\s+(\d+) turns?, (\d+) of \d+ context tokens", self.show())
        assert m, self.child.before
        return int(m[1]), int(m[2])

    def bye(self) -> int:
        self.type("/bye")
        self.child.expect(pexpect.EOF, timeout=30)
        self.child.close()
        return self.child.exitstatus


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def test_help_lists_the_commands(tmp_path, models):
    repl = Repl(tmp_path, models["chat"])
    for command in ("/?", "/help"):
        repl.type(command)
        repl.expect("Available commands:")
        listing = repl.expect("Ctrl + c stops an answer.")
        for name in ("/set parameter NAME VALUE", "/set system TEXT", "/show", "/clear", "/bye", '"""'):
            assert name in listing
    assert repl.turns() == (0, 0)
    assert repl.bye() == 0


def test_set_changes_parameters_and_never_reaches_the_model(tmp_path, models):
    repl = Repl(tmp_path, models["chat"], "--temperature", "0.7")
    assert re.search(r"temperature\s+0\.7\n", repl.show("parameters"))
    repl.type("/set temperature 0")
    repl.expect("Set parameter 'temperature' to '0'")
    repl.type("/set parameter num_predict 5")
    repl.expect("Set parameter 'num_predict' to '5'")
    repl.type("/set parameter top_p 2")  # refused with the sampler's own check, nothing changes
    repl.expect("top-p must be in (0, 1], got 2.0")
    repl.type("/set parameter seed x")
    repl.expect("'x' is not an integer (seed)")
    repl.type("/set system You are terse.")
    repl.expect("Set system message.")
    shown = repl.show("")
    assert re.search(r"temperature\s+0\.0\n", shown) and re.search(r"num_predict\s+5\n", shown)
    assert re.search(r"top_p\s+0\.9\n", shown) and "You are terse." in shown
    assert re.search(r"name\s+tiny-chat\n", shown) and re.search(r"context\s+4096 tokens\n", shown)
    assert repl.turns() == (0, 0)  # none of it was sent to the model
    repl.type("hello")
    repl.expect("The answer stopped at num_predict = 5 tokens")
    turns, tokens = repl.turns()
    assert turns == 1 and tokens > 5
    assert repl.bye() == 0


def test_unknown_command_is_refused(tmp_path, models):
    repl = Repl(tmp_path, models["chat"])
    repl.type("/x")
    repl.expect("Unknown command '/x'. Type /? for help")
    repl.type("/reset now")
    repl.expect("Unknown command '/reset'. Type /? for help")
    assert repl.turns() == (0, 0)
    assert repl.bye() == 0


def test_multiline_and_pasted_messages_are_one_turn_each(tmp_path, models):
    repl = Repl(tmp_path, models["chat"], "-n", "3", "--temperature", "0")
    repl.type('"""')
    for line in ("the quick brown fox", "jumps over", '"""'):  # Enter inside the block adds a line
        repl.send(line + "\r")
    repl.expect("The answer stopped at num_predict = 3 tokens")
    assert repl.turns()[0] == 1
    repl.ready()
    repl.send("\x1b[200~hello world\nthis is zoo\nsparse models\x1b[201~")  # bracketed paste, Enters inside
    with pytest.raises(pexpect.TIMEOUT):  # the Enters inside the paste did not send it
        repl.child.expect_exact("The answer stopped", timeout=1)
    repl.send("\r")
    repl.expect("The answer stopped at num_predict = 3 tokens")
    assert repl.turns()[0] == 2
    assert repl.bye() == 0


def test_ctrl_c_at_the_idle_prompt_stays(tmp_path, models):
    repl = Repl(tmp_path, models["chat"])
    repl.control("c")
    repl.expect("Use Ctrl + d or /bye to exit.")
    repl.ready()
    repl.send("half a message")
    repl.expect("half a message")
    repl.control("c")  # clears the typed line: nothing is sent
    assert repl.turns() == (0, 0)
    repl.ready()
    repl.control("d")  # Ctrl-D on an empty line leaves
    repl.child.expect(pexpect.EOF, timeout=30)
    repl.child.close()
    assert repl.child.exitstatus == 0


def test_ctrl_c_stops_a_long_answer_and_the_turn_keeps_it(tmp_path, models):
    repl = Repl(tmp_path, models["chat"], "--ctx", "16384", "-n", "2")
    repl.type("hi")  # the first answer prepares the kernels; the next one streams at once
    repl.expect("The answer stopped at num_predict = 2 tokens")
    repl.type("/set num_predict -1")
    repl.expect("Set parameter 'num_predict' to '-1'")
    repl.type("tell me a long story")  # no EOS and 16k of context: tens of seconds of answer
    time.sleep(2)
    t0 = time.monotonic()
    repl.control("c")
    repl.ready(timeout=10)
    assert time.monotonic() - t0 < 5
    assert "is full" not in plain(repl.child.before)
    turns, tokens = repl.turns()
    assert turns == 2 and tokens > 100  # the interrupted answer stays in the conversation
    assert repl.bye() == 0


def test_context_full_is_said_and_clear_starts_over(tmp_path, models):
    repl = Repl(tmp_path, models["chat"], "--ctx", "64")
    repl.type("hello")
    repl.expect("The answer stopped where the context of 64 tokens is full. /clear starts a new conversation")
    assert repl.turns() == (1, 64)  # 63 tokens run, the last sampled one held back for the next turn
    repl.type("and then?")
    repl.expect("The conversation no longer fits (context full:")
    repl.type("/clear")
    repl.expect("Cleared session context")
    assert repl.turns() == (0, 0)
    repl.type("hello")
    repl.expect("The answer stopped where the context of 64 tokens is full.")
    assert repl.bye() == 0


def test_history_persists_between_runs(tmp_path, models):
    repl = Repl(tmp_path, models["chat"])
    assert "(none)" in repl.show("system")
    assert repl.bye() == 0
    assert (tmp_path / "history").read_text().count("/show system") == 1
    repl = Repl(tmp_path, models["chat"])
    time.sleep(0.3)  # prompt_toolkit loads the history file in a background task
    repl.send("\x1b[A")  # up: the last line of the first run
    repl.expect("/bye")
    repl.send("\x1b[A\r")  # up again, to the one before it, and Enter
    repl.expect("System")
    repl.ready()
    assert "(none)" in plain(repl.child.before)
    assert repl.bye() == 0


def test_piped_stdin_is_one_prompt_and_prints_only_the_answer(tmp_path, models):
    run = [*harness.ZOO, "run", str(models["chat"]), "--temperature", "0", "-n", "6", "--threads", "1"]
    env = harness.zoo_env(tmp_path)
    text = "the quick brown fox\njumps over the lazy dog\n"
    piped = subprocess.run(run, input=text, capture_output=True, text=True, env=env, timeout=START_S)
    assert piped.returncode == 0, piped.stderr
    direct = subprocess.run([*run, text], capture_output=True, text=True, env=env, timeout=START_S,
                            stdin=subprocess.DEVNULL)
    assert direct.returncode == 0, direct.stderr
    assert piped.stdout == direct.stdout and ">>>" not in piped.stdout and piped.stdout.strip()
    empty = subprocess.run(run, input=" \n", capture_output=True, text=True, env=env, timeout=START_S)
    assert empty.returncode == 1 and empty.stderr.strip().splitlines() == [
        "zoo: error: stdin is empty: nothing to generate from (give a PROMPT or pipe some text)"]


def test_generate_until_the_context_is_full(models):
    model, tok = load(models["chat"], ctx=48)
    session = Session(model, tok)
    ids = tok.encode("hello world")
    result = session.generate(ids, max_tokens=None, params=SamplingParams(temperature=0))
    assert result.finish_reason == "context"
    assert len(ids) + result.generated_tokens == 48 and len(session.history) == 47
    with pytest.raises(RuntimeModelError, match=r"context full: 47 history \+ \d+ prompt tokens leave no room"):
        session.generate(tok.encode("x"), max_tokens=None)
    session.reset()
    assert session.generate(ids, max_tokens=4).finish_reason == "length"  # an explicit limit stays a limit
