"""iptables backends: the same few tagged rules, written through python-iptables on legacy systems and
through one `iptables-nft-restore --noflush` batch on nf_tables systems (Debian 12, Raspberry Pi OS).

Why two: python-iptables drives the legacy x_tables ABI; on an nft system its rules would live in a
second, invisible rule set (`iptables -S` would not show them and the admin's tools would not know
about them). The backend is what `iptables -V` says the system's `iptables` is.

A rule is a small `RuleSpec`; every rule slipsq makes carries an iptables comment starting with
"slipsq", and only such rules (and the chain SLIPSQ, which slipsq creates) are ever deleted.
This module never flushes a chain it did not create.

The table is `security` (TABLE), the one admins leave alone. A verdict of the queue (accept), a
queue nobody reads (`--queue-bypass`, slipsq down) and the bypass rules' ACCEPT each end the *table*
they are in, skipping every rule after them in it: from the filter table (until 2026-12-06) that
skipped the admin's firewall (a FORWARD policy DROP let everything through while slipsq ran and after
it died), and from mangle (for a day) the admin's mangle rules, such as TCPMSS clamping. The security
table's hooks run after filter's (priority 50 against 0): the admin's filter and mangle rules, and
native nftables tables at the usual priorities, decide first, and slipsq inspects, queues and blocks
what they let through (a block's DROP is final wherever it is). iptables-nft has the table on every
nf_tables kernel; iptables-legacy needs iptable_security, which Raspberry Pi OS's kernel lacks for
IPv4: there the legacy backend falls back to mangle (FALLBACK) and the daemon says what that costs.
A backend works on one table; backends of the others are made only to remove what an older slipsq
left there (TABLES).

Rules are read from `iptables-save` (`-nft-save`, `-legacy-save`) output on both backends: python-iptables
cannot decode a table where the admin has the same family-specific target (TCPMSS, DSCP, TPROXY) for
IPv4 and IPv6, and its error stopped slipsq from starting. Legacy rules are still written through it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from slipsq.errors import SystemSetupError

TAG = "slipsq"
CHAIN = "SLIPSQ"
TABLE = "security"  # where slipsq's rules live (see above)
FALLBACK = "mangle"  # iptables-legacy without the security table
TABLES = ("security", "mangle", "filter")  # every table a slipsq ever wrote to (filter until 2026-12-06)


@dataclass(frozen=True)
class RuleSpec:
    chain: str
    target: str  # DROP, NFQUEUE or a chain name
    comment: str = TAG
    match_set: tuple[str, str] | None = None  # (set name, "src"|"dst")
    # NFQUEUE --queue-num N, or --queue-balance A:B for (A, B); always with --queue-bypass
    queue: int | tuple[int, int] | None = None
    extra: tuple[str, ...] = ()  # more matches in iptables syntax (-p, -m NAME, --option values)
    target_args: tuple[str, ...] = ()  # the target's options (--option values)

    def args(self) -> list[str]:
        """The rule in iptables syntax, without the -A/-I CHAIN part."""
        a: list[str] = []
        if self.match_set:
            a += ["-m", "set", "--match-set", self.match_set[0], self.match_set[1]]
        a += list(self.extra)
        a += ["-m", "comment", "--comment", self.comment, "-j", self.target]
        if isinstance(self.queue, tuple):
            # the kernel's hash over the address pair (not --queue-cpu-fanout, which picks by CPU and
            # splits a connection's two directions over two workers' tables: slipsq.multiqueue)
            a += ["--queue-balance", f"{self.queue[0]}:{self.queue[1]}", "--queue-bypass"]
        elif self.queue is not None:
            a += ["--queue-num", str(self.queue), "--queue-bypass"]
        return a + list(self.target_args)


@dataclass(frozen=True)
class RuleState:
    """One slipsq-tagged rule found in the kernel, with its counters."""

    chain: str
    position: int  # 1-based within its chain
    comment: str
    target: str
    packets: int
    bytes: int
    text: str


RulePred = Callable[[RuleState], bool]  # which of slipsq's rules delete_tagged removes


def detect_backend() -> str:
    """'nft' or 'legacy': what the system's `iptables` command drives."""
    exe = shutil.which("iptables")
    if exe is None:
        raise SystemSetupError("iptables is not installed (Debian: apt-get install iptables ipset)")
    try:
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemSetupError(f"cannot run iptables -V: {e}") from None
    return parse_backend(out)


def parse_backend(version_line: str) -> str:
    if "nf_tables" in version_line:
        return "nft"
    if "legacy" in version_line or re.search(r"iptables v1\.[0-6]\.", version_line):
        return "legacy"  # 1.6 and older only had the legacy backend and said nothing
    raise SystemSetupError(f"cannot tell the iptables backend from {version_line.strip()!r}")


class Backend(Protocol):
    name: str
    table: str

    def ensure_chain(self, family: int) -> None: ...
    def insert(self, family: int, rule: RuleSpec, position: int) -> None: ...
    def delete_tagged(self, family: int, pred: RulePred) -> int: ...
    def delete_chain(self, family: int) -> None: ...
    def rules(self, family: int) -> tuple[list[RuleState], bool]: ...


_SAVE_RULE = re.compile(r"^(?:\[(\d+):(\d+)\] )?-A (\S+) (.*)$")
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')
_TARGET = re.compile(r"-j (\S+)")


def parse_save(text: str) -> tuple[list[RuleState], bool]:
    """The slipsq-tagged rules in `iptables-save -c -t TABLE` output, and whether chain SLIPSQ exists."""
    out: list[RuleState] = []
    positions: dict[str, int] = {}
    has_chain = False
    for line in text.splitlines():
        if line.startswith(f":{CHAIN} "):
            has_chain = True
        m = _SAVE_RULE.match(line)
        if not m:
            continue
        chain = m.group(3)
        positions[chain] = positions.get(chain, 0) + 1
        c = _COMMENT.search(m.group(4))
        comment = (c.group(1) if c.group(1) is not None else c.group(2)) if c else ""
        if not comment.startswith(TAG):
            continue
        t = _TARGET.search(m.group(4))
        out.append(RuleState(chain, positions[chain], comment, t.group(1) if t else "",
                             int(m.group(1) or 0), int(m.group(2) or 0), f"-A {chain} {m.group(4)}"))
    return out, has_chain


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise SystemSetupError(f"{name} is not installed (Debian: apt-get install iptables)")
    return exe


def _saved(exe: str, table: str) -> tuple[list[RuleState], bool]:
    """parse_save of `EXE -c -t TABLE` (EXE: an iptables-save)."""
    r = subprocess.run([exe, "-c", "-t", table], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SystemSetupError(f"{exe} -t {table} failed: {r.stderr.strip()}")
    return parse_save(r.stdout)


def _restore(exe: str, table: str, lines: list[str]) -> None:
    """One `EXE --noflush` batch on `table`: applied whole or not at all."""
    script = f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n"
    r = subprocess.run([exe, "--noflush"], input=script, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SystemSetupError(f"{exe} failed: {r.stderr.strip() or f'exit {r.returncode}'}")


def _deletions(doomed: list[RuleState]) -> list[str]:
    """Restore lines deleting each rule by what it says (its save line with -D for -A), not by its
    position: a rule the admin inserted into the chain since it was read moves the positions, and
    the admin's rule would have been deleted in place of ours."""
    return ["-D " + r.text[3:] for r in doomed]


def _restore_join(args: list[str]) -> str:
    """iptables-restore quoting: double quotes around words with spaces (it knows no shell quoting)."""
    for a in args:
        if '"' in a or "\n" in a:
            raise ValueError(f"cannot quote {a!r} for iptables-restore")
    return " ".join(f'"{a}"' if (" " in a or not a) else a for a in args)


def _tool(family: int, suffix: str) -> str:
    """The path of `iptables<suffix>` (IPv4) or `ip6tables<suffix>`, e.g. "-nft-save"."""
    return _exe(("iptables" if family == 4 else "ip6tables") + suffix)


class _ByContent:
    """Reading and deleting rules through `iptables-save`/`-restore` (both backends): `_suffix` names
    the tools ("-nft", "-legacy")."""

    table: str
    _suffix: str

    def _restore(self, family: int, lines: list[str]) -> None:
        _restore(_tool(family, self._suffix + "-restore"), self.table, lines)

    def rules(self, family: int) -> tuple[list[RuleState], bool]:
        return _saved(_tool(family, self._suffix + "-save"), self.table)

    def delete_tagged(self, family: int, pred: RulePred) -> int:
        """The rules `pred` picks, deleted by what they say in one batch (their order does not matter;
        python-iptables would decode the chain's every rule)."""
        doomed = [r for r in self.rules(family)[0] if pred(r)]
        if doomed:
            self._restore(family, _deletions(doomed))
        return len(doomed)


class NftBackend(_ByContent):
    """iptables-nft(-restore): each change is one `--noflush` batch, applied atomically."""

    name = "nft"
    _suffix = "-nft"

    def __init__(self, table: str = TABLE) -> None:
        self.table = table

    def ensure_chain(self, family: int) -> None:
        if not self.rules(family)[1]:
            self._restore(family, [f":{CHAIN} - [0:0]"])

    def insert(self, family: int, rule: RuleSpec, position: int) -> None:
        verb = f"-I {rule.chain} {position}" if position > 0 else f"-A {rule.chain}"
        self._restore(family, [f"{verb} {_restore_join(rule.args())}"])

    def delete_chain(self, family: int) -> None:
        if self.rules(family)[1]:
            self._restore(family, [f"-F {CHAIN}", f"-X {CHAIN}"])


class LegacyBackend(_ByContent):
    """python-iptables (iptc) on the legacy x_tables backend; rules read and deleted through
    iptables-legacy-save/-restore, as the nft backend does."""

    name = "legacy"
    _suffix = "-legacy"

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        try:
            import iptc
        except Exception as e:  # iptc raises various errors when libxtables is missing
            raise SystemSetupError(f"python-iptables cannot be loaded: {e}") from None
        self.iptc: Any = iptc

    def _table(self, family: int) -> Any:
        iptc = self.iptc
        t = iptc.Table(self.table) if family == 4 else iptc.Table6(self.table)
        t.refresh()
        return t

    def _rule(self, family: int, spec: RuleSpec) -> Any:
        r = self.iptc.Rule() if family == 4 else self.iptc.Rule6()
        if spec.match_set:
            m = r.create_match("set")
            m.match_set = list(spec.match_set)
        _extra_matches(r, spec.extra)
        c = r.create_match("comment")
        c.comment = spec.comment
        r.target = self.iptc.Target(r, spec.target)
        if isinstance(spec.queue, tuple):
            r.target.queue_balance = f"{spec.queue[0]}:{spec.queue[1]}"
            r.target.queue_bypass = ""
        elif spec.queue is not None:
            r.target.queue_num = str(spec.queue)
            r.target.queue_bypass = ""
        _options(r.target, spec.target_args)
        return r

    def usable(self) -> bool:
        """Whether this kernel has the table for IPv4 (python-iptables raises when it does not)."""
        try:
            self._table(4)
        except Exception:
            return False
        return True

    def ensure_chain(self, family: int) -> None:
        t = self._table(family)
        if not t.is_chain(CHAIN):
            t.create_chain(CHAIN)

    def insert(self, family: int, rule: RuleSpec, position: int) -> None:
        t = self._table(family)
        chain = self.iptc.Chain(t, rule.chain)
        r = self._rule(family, rule)
        if position > 0:
            chain.insert_rule(r, position - 1)
        else:
            chain.append_rule(r)

    def delete_chain(self, family: int) -> None:
        t = self._table(family)
        if t.is_chain(CHAIN):
            chain = self.iptc.Chain(t, CHAIN)
            chain.flush()  # our own chain: the only one slipsq ever flushes
            chain.delete()


def _extra_matches(rule: Any, extra: tuple[str, ...]) -> None:
    """RuleSpec.extra onto a python-iptables rule: `-p` sets the protocol, `[!] -i/-o IF` the
    interface (python-iptables reads a leading "!" as not), `-m NAME` starts a match, `--option v...`
    sets the current match's option (its values up to the next `-` word)."""
    match: Any = None
    i = 0
    negate = ""
    while i < len(extra):
        word = extra[i]
        if word == "!":
            negate, i = "!", i + 1
            continue
        j = i + 1
        while j < len(extra) and not extra[j].startswith("-"):
            j += 1
        values = list(extra[i + 1:j])
        if negate and word not in ("-i", "-o"):
            raise ValueError(f"cannot express '! {word}' in python-iptables")
        if word in ("-i", "-o"):
            setattr(rule, "in_interface" if word == "-i" else "out_interface", negate + values[0])
            _v6_interface_mask(rule, word, values[0])
            negate = ""
        elif word == "-p":
            rule.protocol = values[0]
        elif word == "-m":
            match = rule.create_match(values[0])
        elif word.startswith("--") and match is not None:
            _options(match, extra[i:j])
        else:
            raise ValueError(f"cannot express {word!r} in python-iptables")
        i = j


def _v6_interface_mask(rule: Any, word: str, name: str) -> None:
    """python-iptables (1.0.1) writes an IPv6 rule's interface mask as 0x01 per byte where
    ip6tables writes 0xFF: the kernel then compares only each byte's lowest bit (`! -i lo` also
    spared other interfaces), and ip6tables cannot delete the rule (`slipsq rules remove` failed).
    Set it as ip6tables does; IPv4 rules are right already."""
    ip6 = getattr(getattr(rule, "entry", None), "ipv6", None)
    if ip6 is None:
        return
    n = len(name) + 1  # the name and its NUL, as ip6tables (no "+" wildcard here)
    mask = b"\xff" * n + b"\x00" * (16 - n)
    if word == "-i":
        ip6.iniface_mask = mask
    else:
        ip6.outiface_mask = mask


def _options(obj: Any, words: tuple[str, ...]) -> None:
    """`--option [values]` words onto a python-iptables match or target (no value: a flag)."""
    i = 0
    while i < len(words):
        j = i + 1
        while j < len(words) and not words[j].startswith("--"):
            j += 1
        values = list(words[i + 1:j])
        setattr(obj, words[i][2:].replace("-", "_"), values if len(values) > 1 else values[0] if values else "")
        i = j


def make_backend(name: str = "auto", table: str | None = None) -> Backend:
    """`auto` follows `iptables -V`; `legacy`/`nft` force one (tests run both). `table`: None for
    slipsq's (TABLE; FALLBACK for a legacy kernel without it), or one of TABLES to clean up."""
    if name == "auto":
        name = detect_backend()
    if name == "nft":
        return NftBackend(table or TABLE)
    if name == "legacy":
        if table is None:
            chosen = LegacyBackend(TABLE)
            return chosen if chosen.usable() else LegacyBackend(FALLBACK)
        return LegacyBackend(table)
    raise SystemSetupError(f"unknown iptables backend {name!r} (auto, nft or legacy)")
