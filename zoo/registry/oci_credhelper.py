"""Docker credential helpers, run the way docker and oras run them.

`docker-credential-<name> get` gets the server address on stdin and answers `{"ServerURL", "Username",
"Secret"}` JSON on stdout; Username `<token>` means Secret is an identity (refresh) token. The helper is an
outside program: its answer is read within a size limit and a time limit, and every failure is one line.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import time

from zoo.errors import RegistryError
from zoo.untrusted import loads_json

PREFIX = "docker-credential-"
TOKEN_USERNAME = "<token>"  # docker's marker: the Secret is an identity token, not a password
NOT_FOUND = "credentials not found in native keychain"  # what every helper of docker-credential-helpers says
HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HELPER_TIMEOUT = 30.0  # seconds: a helper may unlock a keychain, never hang a pull
MAX_HELPER_OUTPUT = 64 << 10  # an answer holds one user name and one secret: bytes, not megabytes


def helper_credentials(helper: object, server: str) -> tuple[str, str] | None:
    """(Username, Secret) that `docker-credential-<helper> get` holds for `server`; None when it has none."""
    if not isinstance(helper, str) or not HELPER_NAME.fullmatch(helper):
        raise RegistryError(f"docker config: {str(helper)[:64]!r} is not a credential helper name")
    program = PREFIX + helper
    path = shutil.which(program)
    if path is None:
        raise RegistryError(f"docker config uses the credential helper {helper!r}, but {program} is not on PATH")
    code, out = _run(path, program, server)
    if code != 0:
        message = _first_line(out)
        if message.lower() == NOT_FOUND:
            return None
        raise RegistryError(f"{program} get failed for {server} (exit {code}: {message or 'no message'})")
    answer = loads_json(out, f"{program} get: its answer", RegistryError, max_bytes=MAX_HELPER_OUTPUT)
    user = answer.get("Username") if isinstance(answer, dict) else None
    secret = answer.get("Secret") if isinstance(answer, dict) else None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        raise RegistryError(f"{program} get: its answer for {server} has no Username and Secret")
    return user, secret


def _run(path: str, program: str, server: str) -> tuple[int, bytes]:
    """Run `<path> get` with `server` on stdin; (exit code, stdout), stdout cut off past MAX_HELPER_OUTPUT."""
    try:
        proc = subprocess.Popen([path, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        raise RegistryError(f"{program}: cannot run it ({err.strerror or type(err).__name__})") from None
    deadline = time.monotonic() + HELPER_TIMEOUT
    out = bytearray()
    try:
        try:
            proc.stdin.write(server.encode())
            proc.stdin.close()
        except OSError:
            pass  # it exited without reading (broken pipe): its exit code says why
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RegistryError(f"{program} get did not answer within {HELPER_TIMEOUT:g} s")
                if not selector.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if len(out) > MAX_HELPER_OUTPUT:
                    raise RegistryError(f"{program} get answered more than {MAX_HELPER_OUTPUT >> 10} KiB; refused")
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise RegistryError(f"{program} get did not exit within {HELPER_TIMEOUT:g} s") from None
    except BaseException:
        _kill(proc)
        raise
    finally:
        proc.stdout.close()
    return code, bytes(out)


def _kill(proc: subprocess.Popen) -> None:
    """End the helper and what it started (its own session, see Popen above)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _first_line(out: bytes) -> str:
    """The helper's error message (helpers print it on stdout), printable and short."""
    line = out.decode("utf-8", "replace").strip().splitlines()[0] if out.strip() else ""
    return "".join(c for c in line if c.isprintable())[:200]
