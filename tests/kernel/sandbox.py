"""Run a command under the unit's sandbox, as far as it can be rebuilt without systemd as PID 1:

    python3 sandbox.py UNIT -- COMMAND...

reads systemd/slipsq.service and applies, before exec'ing COMMAND (children inherit all of it, as
under systemd): NoNewPrivileges; CapabilityBoundingSet (every other capability dropped from the
bounding set: root's next exec keeps only those); MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux
>= 6.3); SystemCallFilter (the groups expanded by `systemd-analyze syscall-filter`, the `~` lines
taken out, every other syscall KILLS the process: stricter than the unit's EPERM, so nothing
denied goes unseen). Needs the libseccomp binding (Debian: python3-seccomp) for the system python3.
Not rebuilt here: the mount-namespace options (ProtectSystem, ProtectHome, PrivateTmp, ...).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 24, 65, 1
CAPS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_DAC_OVERRIDE": 1}


def groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = ""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            out[cur] = []
        elif cur and line.startswith("    ") and not line.strip().startswith("#") and line.strip():
            out[cur].append(line.strip())
    return out


def expand(names: list[str], g: dict[str, list[str]]) -> set[str]:
    got: set[str] = set()
    for n in names:
        got |= expand(g[n], g) if n.startswith("@") else {n}
    return got


def unit_values(unit: str, key: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^{key}=(.*)$", open(unit).read(), re.M)]


def main() -> None:
    unit, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    keep = {CAPS[c] for c in unit_values(unit, "CapabilityBoundingSet")[0].split()}
    for cap in range(64):
        if cap not in keep and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
    if unit_values(unit, "MemoryDenyWriteExecute") == ["yes"]:
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_MDWE")
    import seccomp

    g = groups()
    allowed: set[str] = set()
    for v in unit_values(unit, "SystemCallFilter"):
        if v.startswith("~"):
            allowed -= expand(v[1:].split(), g)
        else:
            allowed |= expand(v.split(), g)
    # SANDBOX_LOG=1: log denied syscalls (dmesg) instead of killing, to find which one
    f = seccomp.SyscallFilter(defaction=seccomp.LOG if os.environ.get("SANDBOX_LOG") else seccomp.KILL_PROCESS)
    for name in sorted(allowed):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # a syscall this architecture does not have
    f.load()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
