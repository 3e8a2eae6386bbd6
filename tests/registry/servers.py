"""Real servers on loopback for the registry tests: nginx (HTTP mirror) and moto (S3).

Each is started by a fixture and stopped when the test (or module) ends; nothing here mocks zoo.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/tmp_body;
  proxy_temp_path {dir}/tmp_proxy;
  fastcgi_temp_path {dir}/tmp_fcgi;
  uwsgi_temp_path {dir}/tmp_uwsgi;
  scgi_temp_path {dir}/tmp_scgi;
  types {{ application/json json; }}
  default_type application/octet-stream;
  sendfile on;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /slow/ {{ alias {root}/; limit_rate {rate}; }}
  }}
}}
"""


class Nginx:
    """nginx serving `root` at http://127.0.0.1:port/ (and rate-limited at /slow/)."""

    def __init__(self, root: Path, workdir: Path, rate: str = "256k") -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (scripts/setup.sh --test installs nginx-light)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.root = root
        self.workdir = workdir
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, dir=workdir, port=self.port, root=root, rate=rate))
        self.proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {(workdir / 'error.log').read_text()[-500:]}")
        self.url = f"http://127.0.0.1:{self.port}"

    def access_log(self) -> str:
        return (self.workdir / "access.log").read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
