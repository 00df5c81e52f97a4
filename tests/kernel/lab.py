"""A namespace lab: two clients, a forwarding gateway, a server with two addresses.

    cA 10.71.1.2 ──veth── 10.71.1.1 ┐
                                    gw (forwards; slipsq runs here on FORWARD)
    cB 10.71.2.2 ──veth── 10.71.2.1 ┤
                                    │
    srv 10.71.3.2 (C&C) ──veth── 10.71.3.1
        10.71.3.3 (legit service)

Names carry a random 4-hex suffix, so runs never collide; `down()` deletes the namespaces (which
takes their veths, ipsets and iptables rules with them) and kills every process the lab started.
Addresses are fixed: each namespace has its own stack, so they cannot clash with the host.

`Daemon` runs slipsq in the gateway: the one way the kernel tests (conftest's `Slipsq`) and the
benches (bench/throughput.py, multiqueue.py, inline.py) start it, wait until it answers, ask its
status and stop it. It never cleans up on its own: its process is the lab's, so `down()` kills it and the
namespace's deletion takes its rules, whatever failed first. This module must never touch the host's
own namespaces, firewall or files outside the directories a caller hands it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slipsq.config import flat_toml

ROOT = Path(__file__).resolve().parents[2]
PROBE = str(Path(__file__).with_name("netprobe.py"))
CNC, LEGIT = "10.71.3.2", "10.71.3.3"
CNC6 = "fd71:3::2"
CLIENT_A, CLIENT_B = "10.71.1.2", "10.71.2.2"
GW_ADDRS = ("10.71.1.1", "10.71.2.1", "10.71.3.1")


def why_no_lab() -> str | None:
    """None when this machine can build the lab, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = f"sqprobe{secrets.token_hex(2)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns is unavailable: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def alive(pid: int) -> bool:
    """True while a process with this pid exists (a reaped child's pid is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Lab:
    def __init__(self) -> None:
        sfx = secrets.token_hex(2)
        self.sfx = sfx
        self.ns = {k: f"sq{sfx}{k}" for k in ("a", "b", "gw", "srv")}
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def gw(self) -> str:
        return self.ns["gw"]

    def sh(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {ns}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def ip(self, ns: str, *args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=10)

    def popen(self, ns: str, *cmd: str, env: dict[str, str] | None = None,
              stdin: bool = False) -> subprocess.Popen[str]:
        """`cmd` in namespace `ns`, its output piped (and its input, with `stdin`); the lab kills it
        in teardown."""
        e = dict(os.environ, PYTHONPATH=str(ROOT))
        e.update(env or {})
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None, text=True,
                             env=e, start_new_session=True)
        self.procs.append(p)
        return p

    def probe(self, ns: str, *args: str) -> subprocess.Popen[str]:
        return self.popen(ns, sys.executable, PROBE, *args)

    def up(self) -> Lab:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            self.ip(ns, "link", "set", "lo", "up")
        links = (("a", "10.71.1.2/24", "10.71.1.1/24"), ("b", "10.71.2.2/24", "10.71.2.1/24"),
                 ("srv", "10.71.3.2/24", "10.71.3.1/24"))
        for side, addr, gw_addr in links:
            outer, inner = f"sq{self.sfx}{side}0", f"sq{self.sfx}{side}1"
            subprocess.run(["ip", "link", "add", outer, "netns", self.ns[side], "type", "veth",
                            "peer", "name", inner, "netns", self.gw], check=True, capture_output=True)
            self.ip(self.ns[side], "addr", "add", addr, "dev", outer)
            self.ip(self.ns[side], "link", "set", outer, "up")
            self.ip(self.gw, "addr", "add", gw_addr, "dev", inner)
            self.ip(self.gw, "link", "set", inner, "up")
            self.ip(self.ns[side], "route", "add", "default", "via", gw_addr.split("/")[0])
            if side == "srv":
                self.ip(self.ns[side], "addr", "add", "10.71.3.3/24", "dev", outer)
            # IPv6 too (nodad: usable at once, no duplicate-address-detection wait)
            n = {"a": 1, "b": 2, "srv": 3}[side]
            self.ip(self.ns[side], "-6", "addr", "add", f"fd71:{n}::2/64", "dev", outer, "nodad")
            self.ip(self.gw, "-6", "addr", "add", f"fd71:{n}::1/64", "dev", inner, "nodad")
            self.ip(self.ns[side], "-6", "route", "add", "default", "via", f"fd71:{n}::1")
        self.sh(self.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh(self.gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        return self

    def serve(self) -> subprocess.Popen[str]:
        """The C&C and the legitimate service, both answering TCP port 8080."""
        p = self.probe(self.ns["srv"], "serve", f"{CNC}:8080", f"{LEGIT}:8080", f"[{CNC6}]:8080")
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server did not start: {p.stderr.read() if p.stderr else ''}")
        return p

    def connect(self, client: str, host: str, port: int = 8080, timeout: float = 1.0) -> bool:
        """One TCP connection from a client namespace; True when the server answered."""
        code = (f"import socket\ntry:\n s=socket.create_connection(('{host}',{port}),timeout={timeout})\n"
                " print(s.recv(8)==b'ok\\n')\nexcept OSError:\n print(False)")
        r = self.sh(self.ns[client], sys.executable, "-c", code, check=False, timeout=timeout + 10)
        return r.stdout.strip() == "True"

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        # veths die with their namespaces; give the kernel a moment before the next lab
        time.sleep(0.05)


class Daemon:
    """slipsq's daemon in a lab's gateway: its command line, its start, its status, its stop.

    `backend` sets $SLIPSQ_IPTABLES_BACKEND for the daemon and its admin commands (None: slipsq's own
    choice, auto). `config` is written as TOML beside the state directory, one file per lab there (a
    second Daemon beside it rewrites it), and passed with --config (None: no --config, slipsq's
    defaults only). `prefix` goes before the interpreter (e.g. nice).
    """

    def __init__(self, lab: Lab, state_dir: Path, *, queue: int | str = 5, backend: str | None = None,
                 config: Mapping[str, Any] | None = None, prefix: Sequence[str] = ()) -> None:
        self.lab, self.state_dir, self.backend, self.queue = lab, state_dir, backend, queue
        self.prefix = tuple(prefix)
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = state_dir.parent / f"slipsq-{lab.sfx}.toml"
            self.config_path.write_text(to_toml(config))
        self.proc: subprocess.Popen[str] | None = None
        self._err_seen = ""  # what stderr_so_far read of the running daemon's stderr (stop returns it too)

    def env(self) -> dict[str, str]:
        """What the daemon's environment adds to the lab's (a subclass may add more)."""
        return {"SLIPSQ_IPTABLES_BACKEND": self.backend} if self.backend else {}

    def start(self, *extra: str, wait: bool = True, timeout: float = 15) -> subprocess.Popen[str]:
        """Start the daemon (`extra`: more of its flags); with `wait`, return once it answers status.

        Raises RuntimeError when it exits first or does not answer within `timeout` s; the process is
        the lab's either way, so the lab's `down()` still kills it."""
        config = ("--config", str(self.config_path)) if self.config_path else ()
        self.proc = self.lab.popen(self.lab.gw, *self.prefix, sys.executable, "-m", "slipsq", "--queue",
                                   str(self.queue), "--install-rules", "--state-dir", str(self.state_dir),
                                   *config, *extra, env=self.env())
        if wait:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    # it has exited, so reading its stderr to the end cannot block
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise RuntimeError(f"slipsq exited {self.proc.returncode}: {err}")
                if self.cli("status", check=False).returncode == 0:
                    return self.proc
                time.sleep(0.1)
            raise RuntimeError(f"slipsq did not answer status within {timeout:g} s")
        return self.proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """An admin command (`slipsq ARGS --state-dir ...`) run in the gateway against this daemon."""
        env = [f"PYTHONPATH={ROOT}"] + ([f"SLIPSQ_IPTABLES_BACKEND={self.backend}"] if self.backend else [])
        r = self.lab.sh(self.lab.gw, "env", *env, sys.executable, "-m", "slipsq", *args, "--state-dir",
                        str(self.state_dir), check=False, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"slipsq {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def status(self) -> dict[str, Any]:
        """`slipsq status --json`; AssertionError when the daemon does not answer."""
        return dict(json.loads(self.cli("status", "--json").stdout))

    def try_status(self) -> dict[str, Any] | None:
        """`slipsq status --json`, or None when the daemon does not answer (yet, or any more)."""
        r = self.cli("status", "--json", check=False)
        return dict(json.loads(r.stdout)) if r.returncode == 0 else None

    def stderr_so_far(self) -> str:
        """Everything the running daemon has written to stderr so far, read without blocking (to wait
        for a line it logs while it runs); `stop` still returns the whole of it."""
        assert self.proc is not None and self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        try:
            self._err_seen += self.proc.stderr.read() or ""
        finally:
            os.set_blocking(self.proc.stderr.fileno(), True)
        return self._err_seen

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, str]:
        """Signal the daemon and wait for it: (exit code, its whole stderr)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, self._err_seen + err


to_toml = flat_toml  # a flat {"section.key": value} as the TOML file the daemon reads
