"""The interactive chat of `zoo run MODEL` (as Ollama's and llama.cpp's): line editing and a persistent
history (prompt_toolkit), /commands that never reach the model, \"\"\" multi-line input and bracketed
paste, Ctrl-C that stops an answer, and answers that run until EOS or the context is full."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape

from zoo.errors import RuntimeModelError
from zoo.runtime import Result, SamplingParams, Session

FENCE = '"""'
PROMPT = ">>> "
IDLE_CTRL_C = "Use Ctrl + d or /bye to exit."
HELP = f"""Available commands:
  /set parameter NAME VALUE   Set a parameter (/set NAME VALUE for short):
                                temperature, top_k, top_p, repeat_penalty, seed,
                                num_predict (max tokens; -1 = until EOS or the context)
  /set system TEXT            Set the system message
  /show [info|parameters|system]   Show the model, the parameters, the system message
  /clear                      Forget the conversation
  /bye                        Exit (or Ctrl + d)
  /?, /help                   This help

Use {FENCE} to begin and end a multi-line message; pasted lines are one message.
Ctrl + c stops an answer."""

# /set parameter NAME: (SamplingParams field, or None for num_predict; value type)
PARAMETERS: dict[str, tuple[str | None, type]] = {
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "repeat_penalty": ("repetition_penalty", float),
    "seed": ("seed", int),
    "num_predict": (None, int),
}


def piped_prompt() -> str:
    """All of stdin as one prompt (`echo hi | zoo run MODEL`: one answer, no REPL)."""
    text = sys.stdin.read()
    if not text.strip():
        raise RuntimeModelError("stdin is empty: nothing to generate from (give a PROMPT or pipe some text)")
    return text


def model_info(path: Path) -> dict:
    """The card's key fields for /show (name, architecture, size, measured metrics); {} without a card."""
    from zoo.card import parse, search_fields
    from zoo.errors import ZooError

    try:
        return search_fields(parse((path / "zoo.yaml").read_bytes(), source=str(path)))
    except (OSError, ZooError):
        return {}


@dataclass
class Chat:
    """One conversation: the session (KV cache), the messages the template renders, the settings."""

    session: Session
    params: SamplingParams
    name: str
    info: dict = field(default_factory=dict)  # model_info(): what /show prints about the model
    num_predict: int = -1  # max new tokens per answer; -1 = until EOS or the context is full
    system: str | None = None
    template: bool = True  # False: --raw or no chat template (each message is encoded as is)
    stop: list[str] | None = None
    prepare: Callable[[int], None] = lambda n_prompt: None  # before the first answer (kernels)
    report: Callable[[Result], None] = lambda result: None  # after each answer (--verbose stats)
    messages: list[dict] = field(default_factory=list)
    raw_turns: int = 0  # answers given without a template (the messages are not kept then)
    out: Console = field(default_factory=lambda: Console(highlight=False))

    def __post_init__(self) -> None:
        self.clear()

    # ---- the loop

    def run(self, history_file: Path | None) -> None:
        """Read, run commands or answer, until /bye or Ctrl-D."""
        prompt = _prompt_session(history_file)
        while True:
            try:
                line = prompt.prompt(PROMPT, placeholder=_placeholder())
            except KeyboardInterrupt:
                self.out.print(IDLE_CTRL_C)
                continue
            except EOFError:
                return
            text = line.strip()
            if text.startswith(FENCE):
                text = _unfence(text)
            elif text.startswith("/"):
                if self.command(text):
                    return
                continue
            if text:
                try:
                    self.answer(text)
                except KeyboardInterrupt:  # a second Ctrl-C while the stopped answer was wrapped up
                    self.out.print()

    def command(self, line: str) -> bool:
        """Run one /command; True means leave. Nothing here reaches the model."""
        word, rest = (line.split(None, 1) + [""])[:2]
        if word in ("/?", "/help"):
            self.out.print(HELP, markup=False)
        elif word == "/bye":
            return True
        elif word == "/clear":
            self.clear()
            self.out.print("Cleared session context")
        elif word == "/show":
            self.show(rest)
        elif word == "/set":
            self.set(rest)
        else:
            self.out.print(f"Unknown command '{word}'. Type /? for help", markup=False)
        return False

    # ---- commands

    def clear(self) -> None:
        self.session.reset()
        self.raw_turns = 0
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def set(self, args: str) -> None:
        what, rest = (args.split(None, 1) + [""])[:2]
        if what == "system":
            self.set_system(rest)
        elif what == "parameter" and len(rest.split()) == 2:
            self.set_parameter(*rest.split())
        elif what in PARAMETERS and len(rest.split()) == 1:
            self.set_parameter(what, rest)
        else:
            self.fail(f"Usage: /set parameter NAME VALUE (NAME one of {', '.join(PARAMETERS)}) or /set system TEXT")

    def set_parameter(self, name: str, value: str) -> None:
        if name not in PARAMETERS:
            return self.fail(f"Unknown parameter '{name}' (one of {', '.join(PARAMETERS)})")
        attr, kind = PARAMETERS[name]
        try:
            number = kind(value)
        except ValueError:
            return self.fail(f"'{value}' is not {'an integer' if kind is int else 'a number'} ({name})")
        if not math.isfinite(number):
            return self.fail(f"{name} must be finite, got {value}")
        if attr is None:  # num_predict
            if number == 0 or number < -1:
                return self.fail("num_predict must be -1 (until EOS or the context) or >= 1")
            self.num_predict = number
        else:
            if name == "seed" and number < 0:
                return self.fail("seed must be >= 0")
            params = dataclasses.replace(self.params, **{attr: number})
            try:
                params.check()
            except RuntimeModelError as e:
                return self.fail(str(e))
            self.params = params
        self.out.print(f"Set parameter '{name}' to '{value}'", markup=False)

    def set_system(self, text: str) -> None:
        text = _unfence(text) if text.startswith(FENCE) else text
        if not text:
            return self.fail("Usage: /set system TEXT")
        if not self.template:
            return self.fail("no chat template here (--raw, or the model has none): a system message has no place")
        self.system = text
        if self.messages and self.messages[0]["role"] == "system":
            self.messages[0] = {"role": "system", "content": self.system}
        else:
            self.messages.insert(0, {"role": "system", "content": self.system})
        self.out.print("Set system message.")

    def show(self, what: str) -> None:
        if what not in ("", "info", "parameters", "system"):
            return self.fail(f"Unknown /show option '{what}' (info, parameters or system)")
        if what in ("", "info"):
            self.out.print("Model", style="bold")
            self.out.print(_rows(self.model_rows()), markup=False)
        if what in ("", "parameters"):
            self.out.print("Parameters", style="bold")
            self.out.print(_rows(self.parameter_rows()), markup=False)
        if what in ("", "system"):
            self.out.print("System", style="bold")
            self.out.print(f"  {self.system}" if self.system else "  (none)", markup=False)

    def model_rows(self) -> list[tuple[str, object]]:
        from zoo.card import human_size

        i, m = self.info, self.session.model
        rows = [("name", self.name), ("architecture", i.get("architecture") or m.config.get("arch")),
                ("parameters", i.get("parameters")), ("context", f"{m.ctx} tokens"),
                ("sparsity", i.get("sparsity")), ("bits", i.get("bits")),
                ("size", human_size(i["size_bytes"]) if i.get("size_bytes") else None),
                ("perplexity", i.get("perplexity")), ("decode tok/s", i.get("decode_tps")),
                ("conversation", f"{_plural(self.turns(), 'turn')}, {self.used()} of {m.ctx} context tokens")]
        return [(k, v) for k, v in rows if v is not None]

    def parameter_rows(self) -> list[tuple[str, object]]:
        p = self.params
        return [("temperature", p.temperature), ("top_k", p.top_k), ("top_p", p.top_p),
                ("repeat_penalty", p.repetition_penalty), ("seed", "random" if p.seed is None else p.seed),
                ("num_predict", "-1 (until EOS or the context)" if self.num_predict < 0 else self.num_predict)]

    def turns(self) -> int:
        """Messages the user sent in this conversation (raw mode: answers generated)."""
        return sum(m["role"] == "user" for m in self.messages) if self.template else self.raw_turns

    def used(self) -> int:
        return len(self.session.history) + len(self.session.pending)

    def fail(self, message: str) -> None:
        self.out.print(message, markup=False)

    # ---- answering

    def answer(self, text: str) -> None:
        """One turn: stream the answer until EOS, the context, num_predict or Ctrl-C; the turn keeps what
        was generated. Says in one dim line when a limit cut the answer."""
        s = self.session
        try:
            if self.template:
                user = {"role": "user", "content": text}
                ids = s.chat_ids([*self.messages, user])
            else:
                ids = s.tok.encode(text)
        except RuntimeModelError as e:
            return self.fail(f"zoo: error: {e}")
        room = s.model.ctx - self.used() - len(ids)  # new tokens that still fit
        limit = self.num_predict if 0 < self.num_predict < room else None
        result = Result(prompt_tokens=len(ids))
        pieces = s.stream(ids, limit, self.params, self.stop, result)
        try:
            if not s.history:
                self.prepare(len(s.pending) + len(ids))
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C while preparing or printing: this answer ends here
            result.finish_reason = "interrupted"
        except RuntimeModelError as e:  # the conversation no longer fits
            return self.dim(f"The conversation no longer fits ({e}). /clear starts a new conversation")
        finally:
            pieces.close()
        sys.stdout.write("\n")
        if self.template:
            self.messages += [user, {"role": "assistant", "content": result.text}]
        else:
            self.raw_turns += 1
        if result.finish_reason == "context":
            self.dim(f"The answer stopped where the context of {s.model.ctx} tokens is full. "
                     "/clear starts a new conversation")
        elif result.finish_reason == "length":
            self.dim(f"The answer stopped at num_predict = {self.num_predict} tokens "
                     "(/set parameter num_predict -1 lifts the limit)")
        self.report(result)

    def dim(self, message: str) -> None:
        self.out.print(escape(message), style="dim", soft_wrap=True)


def _unfence(text: str) -> str:
    """The message inside \"\"\"...\"\"\" (one line or a block; a missing closing fence is forgiven)."""
    body = text.strip()[len(FENCE):]
    if body.rstrip().endswith(FENCE):
        body = body.rstrip()[: -len(FENCE)]
    return body.strip()


def _open_block(text: str) -> bool:
    """True while a \"\"\" block is open: Enter then adds a line instead of sending."""
    t = text.strip()
    return t.startswith(FENCE) and not (len(t) >= 2 * len(FENCE) and t.endswith(FENCE))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _rows(rows: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _placeholder():
    from prompt_toolkit.formatted_text import FormattedText

    return FormattedText([("fg:ansibrightblack", "Send a message (/? for help)")])


def _prompt_session(history_file: Path | None):
    """A prompt_toolkit session: emacs line editing, history in `history_file` (in memory when it cannot be
    written), Enter adds a line inside a \"\"\" block, Ctrl-C clears a typed line (or, on an empty one,
    raises KeyboardInterrupt). Bracketed paste inserts all pasted lines into the buffer, Enters included."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application import get_app
    from prompt_toolkit.filters import Condition
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    history = InMemoryHistory()
    if history_file is not None:
        try:
            history_file.parent.mkdir(parents=True, exist_ok=True)
            history_file.touch()
            history = FileHistory(str(history_file))
        except OSError:
            pass
    keys = KeyBindings()

    @Condition
    def in_block() -> bool:
        return _open_block(get_app().current_buffer.text)

    @keys.add("enter", filter=in_block)
    def _newline(event) -> None:
        event.current_buffer.newline(copy_margin=False)

    @keys.add("c-c")
    def _interrupt(event) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return PromptSession(history=history, key_bindings=keys, prompt_continuation="... ")
