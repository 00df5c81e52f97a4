"""slipsq.gateway and `slipsq config init`: the first configuration, guessed from the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slipsq import gateway
from slipsq.runmode import all_options, load_config

ROOT = Path(__file__).resolve().parents[1]

ROUTES4 = json.dumps([{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []}])
ROUTES6 = json.dumps([{"dst": "default", "gateway": "fe80::1", "dev": "eth0", "metric": 1024}])
ADDRS = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.10", "prefixlen": 24, "scope": "global"},
                                     {"family": "inet6", "local": "fe80::2", "prefixlen": 64, "scope": "link"}]},
    {"ifname": "wlan0", "addr_info": [{"family": "inet", "local": "192.168.4.1", "prefixlen": 24,
                                       "scope": "global"},
                                      {"family": "inet6", "local": "fd04::1", "prefixlen": 64, "scope": "global"}]},
    {"ifname": "eth1", "addr_info": []},
])
WHO = """pi       pts/0        2026-12-04 20:01 (192.168.4.23)
root     tty1         2026-12-04 19:00
pi       pts/1        2026-12-04 20:05 (fe80::aa%wlan0)
pi       pts/2        2026-12-04 20:06 (192.168.4.23)
bob      pts/3        2026-12-04 20:07 (laptop.lan)
"""


def test_parse_the_machine() -> None:
    routes = gateway.parse_default_routes(ROUTES4) + gateway.parse_default_routes(ROUTES6)
    assert routes == [("eth0", "192.0.2.1"), ("eth0", "fe80::1")]
    addrs = gateway.parse_addresses(ADDRS)
    assert addrs == {"eth0": ["192.0.2.0/24"], "wlan0": ["192.168.4.0/24", "fd04::/64"]}
    m = gateway.guess(routes, addrs, ["192.168.4.23"])
    assert m.wan == ["eth0"] and m.upstream == ["192.0.2.1", "fe80::1"]
    assert m.lan == {"wlan0": ["192.168.4.0/24", "fd04::/64"]}
    assert gateway.allow_list(m) == ["192.168.4.23", "192.0.2.1", "fe80::1"]


@pytest.mark.parametrize(("env", "who", "want"), [
    ({"SSH_CONNECTION": "198.51.100.4 50122 192.0.2.10 22"}, WHO, ["198.51.100.4"]),
    ({"SSH_CLIENT": "2001:db8::7 50122 22"}, "", ["2001:db8::7"]),
    ({}, WHO, ["192.168.4.23", "fe80::aa"]),  # sudo dropped SSH_*: who; names (laptop.lan) are not IPs
    ({"SSH_CONNECTION": "not-an-ip 1 2 3"}, "", []),
    ({}, "", []),
])
def test_ssh_clients(env: dict[str, str], who: str, want: list[str]) -> None:
    assert gateway.ssh_clients(env, who) == want


def test_every_option_is_present_commented_and_the_defaults_are_real() -> None:
    opts = all_options()
    m = gateway.guess([("eth0", "192.0.2.1")], {"wlan0": ["192.168.4.0/24"]}, ["192.168.4.23"])
    text = gateway.initial_config(opts, m, ["10.0.0.0/8"])
    parsed = {sec: t for sec, t in tomllib.loads(text).items() if t}  # the other sections: all commented
    assert parsed == {"allow": {"ips": ["192.168.4.23", "192.0.2.1", "10.0.0.0/8"]}}
    assert "LAN wlan0 192.168.4.0/24" in text and "WAN eth0 via 192.0.2.1" in text
    for o in opts:
        sec = o.key.rpartition(".")[0]
        assert f"# {o.help}" in text, o.key
        assert f"[{sec}]" in text
    # uncomment every default: valid TOML that loads to exactly the defaults (allow.ips aside)
    lines = []
    for line in text.splitlines():
        body = line[2:] if line.startswith("# ") else line
        lines.append(body if " = " in body and not body.startswith(("slipsq", "This", "To ")) else line)
    every = tomllib.loads("\n".join(line for line in lines if not line.startswith("ips = ")))
    flat = {f"{sec}.{k}": v for sec, table in every.items() for k, v in table.items()}
    defaults = dict(load_config(None).items())
    assert set(flat) == set(defaults) - {"allow.ips"}
    for k, v in flat.items():
        assert v == defaults[k], k


def test_nothing_guessed_nothing_set() -> None:
    text = gateway.initial_config(all_options(), gateway.Machine())
    assert not any(tomllib.loads(text).values())
    assert "No SSH session found" in text


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([sys.executable, "-m", "slipsq", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=60)


def test_config_init_cli_puts_the_ssh_client_on_the_allow_list(tmp_path: Path) -> None:
    r = _cli("config", "init", "--allow", "10.1.2.0/24",
             env={"SSH_CONNECTION": "198.51.100.4 50122 192.0.2.10 22"})
    assert r.returncode == 0, r.stderr
    path = tmp_path / "slipsq.toml"
    path.write_text(r.stdout)
    cfg = load_config(path)
    assert cfg["allow.ips"][0] == "198.51.100.4" and "10.1.2.0/24" in cfg["allow.ips"]


def test_config_init_refuses_a_bad_allow_entry() -> None:
    r = _cli("config", "init", "--no-guess", "--allow", "bogus")
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.startswith("slipsq: --allow:") and "Traceback" not in r.stderr
