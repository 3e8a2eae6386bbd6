"""The `zoo` command: assembles the verb modules into one typer app and maps errors to exit codes.

Exit codes: 0 success, 1 a ZooError (one line on stderr), 2 usage, 130 interrupted.
Tracebacks are shown only with ZOO_DEBUG=1.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import typer

from zoo import __version__
from zoo.cli import options
from zoo.errors import ZooError

app = typer.Typer(
    name="zoo",
    help="Pull, push, compress and run sparse, quantized LLMs on the CPU.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand's context
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """zoo: sparse, quantized LLMs on the CPU."""


def _register() -> None:
    """Attach every verb module; each exposes `register(app)`."""
    from zoo.cli import build_cmd, inspect_cmd, registry_cmd, convert_cmd, run_cmd, compress_cmd, export_cmd, serve_cmd, \
        verify_cmd, ps_cmd

    for module in (inspect_cmd, registry_cmd, convert_cmd, run_cmd, compress_cmd, build_cmd, export_cmd, serve_cmd,
                   verify_cmd, ps_cmd):
        module.register(app)
    order = {name: i for i, (name, _) in enumerate(PANELS)}
    app.registered_commands.sort(key=lambda info: order[info.name])
    for info in app.registered_commands:
        info.rich_help_panel = dict(PANELS)[info.name]


# `zoo --help` lists the verbs in groups, the everyday ones first (as ollama and docker list theirs).
PANELS = [(name, "Models") for name in ("run", "pull", "push", "list", "show", "search", "cp", "rm", "ps", "serve")] + \
    [(name, "Make and measure") for name in ("build", "compress", "sweep", "tune", "eval", "bench")] + \
    [(name, "Files") for name in ("convert", "export", "inspect", "verify", "gc")]


_register()
options.hide_flag_types()
options.accept_hidden_aliases()


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP unwind like an error, so every `finally` runs: no staging directory is left behind."""
    raise SystemExit(128 + signum)


def _usage_error(err: Exception) -> None:
    """Print typer's (click's) usage error as one line and exit with its code; a bare `zoo` prints its help."""
    if type(err).__name__ == "NoArgsIsHelpError":  # its message is the whole help text
        err.show()
    else:
        message = " ".join(err.format_message().split())
        hint = " (see --help)" if err.exit_code == 2 else ""
        print(f"zoo: error: {message}{hint}", file=sys.stderr)
    sys.exit(err.exit_code)


def main() -> None:
    """Console entry point: run the app, turning ZooErrors into one line and an exit code."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _exit_on_signal)
    try:
        code = app(standalone_mode=False)
    except ZooError as err:
        if os.environ.get("ZOO_DEBUG") == "1":
            raise
        print(f"zoo: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("zoo: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as stop:
        if isinstance(stop.code, int) and stop.code - 128 in (signal.SIGTERM, signal.SIGHUP):
            print(f"zoo: stopped by {signal.Signals(stop.code - 128).name}", file=sys.stderr)
        raise
    except Exception as err:
        if callable(getattr(err, "format_message", None)) and isinstance(getattr(err, "exit_code", None), int):
            _usage_error(err)  # a usage error from typer's click (exit code 2)
        if os.environ.get("ZOO_DEBUG") == "1":
            raise
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # not a bug
            where = f" writing {err.filename}" if err.filename else ""
            print(f"zoo: error: {err.strerror.lower()}{where} (free some space, then run the command again)",
                  file=sys.stderr)
            sys.exit(1)
        print(f"zoo: internal error: {type(err).__name__}: {err} (ZOO_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # typer reports Ctrl-C inside a command as an exit code, not an exception
        print("zoo: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
