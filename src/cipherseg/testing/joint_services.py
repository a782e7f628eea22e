"""Protocol 4.2's centre and manager services as separate processes on loopback, each with
its own tokens file, for tests and ``cipherseg bench joint``.

>>> JointServices.__name__
'JointServices'
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cipherseg.testing.ports import free_ports
from cipherseg.transport.tokens import add_owner


@dataclass
class JointServices:
    centre_url: str
    manager_url: str
    centre_tokens: dict[str, str]  # node -> its token on the centre
    manager_tokens: dict[str, str]  # node -> its token on the manager
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


def _wait_ready(url: str, token: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/v1/joint/status", timeout=1,
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:g} s")


def _cli() -> list[str]:
    return [sys.executable, "-m", "cipherseg"]


@contextmanager
def joint_services(workdir: Path, nodes: Sequence[str], *, contact_seconds: float = 60.0,
                   join_minutes: float = 15.0) -> Iterator[JointServices]:
    """Start ``cipherseg centre serve --protocol joint`` and ``cipherseg manager serve`` in
    ``workdir`` (tokens files, logs), stop them on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    centre_file, manager_file = workdir / "centre-nodes.txt", workdir / "manager-nodes.txt"
    centre_tokens = {n: add_owner(centre_file, n) for n in [*nodes, "manager"]}
    manager_tokens = {n: add_owner(manager_file, n) for n in nodes}
    token_file = workdir / "manager-on-centre.token"
    token_file.write_text(centre_tokens["manager"] + "\n")
    token_file.chmod(0o600)
    cport, mport = free_ports(2)
    services = JointServices(f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{mport}",
                             centre_tokens, manager_tokens)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    commands = {
        "centre": [*_cli(), "centre", "serve", "--protocol", "joint", "--owners-file",
                   str(centre_file), "--port", str(cport), "--contact-seconds",
                   str(contact_seconds)],
        "manager": [*_cli(), "manager", "serve", "--nodes-file", str(manager_file),
                    "--centre", services.centre_url, "--centre-token-file", str(token_file),
                    "--port", str(mport), "--contact-seconds", str(contact_seconds),
                    "--join-minutes", str(join_minutes)],
    }
    try:
        for name, cmd in commands.items():
            log = workdir / f"{name}.log"
            services.logs[name] = log
            with log.open("wb") as out:
                services.procs[name] = subprocess.Popen(cmd, stdout=out,
                                                        stderr=subprocess.STDOUT, env=env)
        _wait_ready(services.centre_url, centre_tokens["manager"], services.procs["centre"],
                    60)
        _wait_ready(services.manager_url, manager_tokens[nodes[0]], services.procs["manager"],
                    60)
        yield services
    finally:
        for proc in services.procs.values():
            proc.terminate()
        for proc in services.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


__all__ = ["JointServices", "joint_services"]
