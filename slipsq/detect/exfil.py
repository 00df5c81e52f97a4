"""Exfiltration: a large upload from one of our hosts to one server, far more than came back.

Per (client, server) and judge window it sums the TCP bytes each way (flow bytes, IP lengths; the
open part of a long connection counts from its active-timeout reports, so a backup-sized upload in
one connection is seen while it runs, each byte once). It returns Evidence only.

Arithmetic (up, down = bytes in the window; R = `exfil.ratio`, 10):
  judged when up >= B and up >= R x down, where B is the bar for the server:
    an address neither a DNS answer nor the client's TLS ClientHello named:
      B = `exfil.min_bytes_unnamed` (10 MB); threat medium for up >= B, high for up >= 2 B, critical
      for up >= 3 B; confidence = min(1, up / down / 2 R)
    a named server: B = `exfil.min_bytes` (50 MB); medium >= B, high >= 3 B, critical >= 10 B;
      confidence = 0.55 x min(1, up / down / 2 R)
  so 30 MB to a bare address with under 1.5 MB back scores 1.0 x 1.0 and blocks by itself, 10-19 MB
  scores at most 0.5 (an alert); an upload to a named server never exceeds 0.55 (an alert that
  blocks only with other evidence against the server: people upload to their own named servers;
  below the judge's persist_min 0.6, so a named upload that keeps growing never doubles either).
Evidence is emitted when a pair first qualifies, again when its upload doubles or its threat
rises; one key per pair. The offender is the server (the drop site).

False-positive guards:
* Backups, photo and video uploads to the big clouds: a server whose DNS names (ctx.dns_names) end
  with one of `exfil.allow_domains` (storage, backup, photo, video and conferencing services) is
  never judged; those uploads are huge, asymmetric and legitimate. The names come from DNS answers
  seen before, so a long-lived backup connection opened after a lookup is known by name.
* Devices that resolve over encrypted DNS (Firefox's DNS over HTTPS, Android's Private DNS, a resolver
  the house does not trust): no answer names their servers, and a 35 MB web upload blocked an S3,
  Google or CDN address the whole house uses. The name the client asked the server for in its TLS
  ClientHello (SNI) makes the server a named one (the higher bar, alert only), never an allowed one
  (exfil.allow_domains asks DNS names only: the ClientHello is the client's own claim).
* Sync peers that no name reaches: a ClientHello that names no server but offers the protocol of an
  application whose peers are found without DNS (APP_PROTOCOLS: Syncthing's bep/1.0 and its relays'
  bep-relay) makes the server a named one too, for the same reason and with the same limit (the
  hello is the client's claim; a thief could send it, as it could send any server name). A program
  posting to https://<bare address>/ offers h2 and http/1.1: those name no application.
* VPN servers: a connection whose client's first bytes open a VPN tunnel (TUNNELS: OpenVPN over
  TCP; the decoder names it from its hard reset) is summed apart from the pair's other connections,
  and those sums are capped as a named server's, alone never a block: what goes up a tunnel is its
  user's every upload (a nightly backup through a VPN app's server, chosen by address). Its bar
  stays an unnamed address's (10 MB), so a theft dressed as a tunnel is still reported; an upload
  on another connection to that server is judged as ever (a red team's split theft). UDP tunnels
  (WireGuard, OpenVPN's default) are not counted at all. A Shadowsocks or Outline proxy shows
  nothing (random bytes by design): put its address in `allow.ips`.
* Apps with built-in server addresses: Telegram's clients reach its data centres by address and
  speak MTProto (no hello, no name); an upload to the networks such an application's owner
  publishes (APP_NETWORKS) is capped as a named server's, at an unnamed address's bar (a video sent
  from a phone blocked the house's Telegram data centre; a stealer posting 40 MB through MTProto is
  reported at critical x 0.55).
* Video calls and screen sharing are symmetric (both ends send video): the ratio R keeps them out;
  they are mostly UDP, which is not counted at all (games, calls, QUIC uploads).
* BitTorrent seeding: a P2P host (ctx.peers, the p2p detector) uploads hundreds of MB to unnamed
  peers on high ports; uploads from a P2P host to what looks like its peer are not judged.
* Uploads to LAN destinations (a NAS, another PC) and inbound uploads (to our servers) are not
  judged; an upload by a client that is not ours (a public address) is reported, never blocks.
* Flows seen backwards (a well-known source port, an ephemeral destination port: a flow file's
  "<?>" flows) would make a download an upload: skipped.
* Flows whose bytes are not split by direction (a flow file without SrcBytes: dbytes 0 and dpkts 0
  on a connection that was answered) are skipped: every byte would look like an upload.
* A TCP flow its server denied (`tcpstate.denied`: no handshake seen, and the server reset it) is
  not counted: segments sent with somebody else's address and no handshake, answered by a RST, must
  not get a server everyone uses blocked. The middle of a real connection (a capture that began
  after its handshake, a piece after an idle gap, or after the client's own RST) still counts: its
  server acknowledges, it does not reset.
* A flow that carried under 16 kB both ways is not counted (most flows: it costs one comparison):
  50 MB in such flows would take 3,000+ connections to one server, a beacon's business.
The per-flow path and state (the tests, the reports, the pair sums) are `Intake`, compiled as
`_exfil.Intake` (slipsq.twins chooses): Python runs only to judge a pair past the bar and R.
Caught: bulk theft (ransomware's double extortion, a dump of a disk or mailbox) to a bare address
or an unknown named host, in one connection or many, within a window. Not caught: small thefts (an
infostealer's few MB of passwords, below M), uploads spread over many servers or windows, uploads
to an allowed cloud (attackers use them too: an allow-list trade), exfiltration over UDP or DNS.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, report_due
from slipsq.detect.prefixes import PrefixSet, is_local
from slipsq.detect.tcpstate import denied
from slipsq.flow import AppEvent, Flow
from slipsq.lru import new, put, touch
from slipsq.records import CRITICAL, HIGH, MEDIUM, Evidence

DEFAULT_ALLOW_DOMAINS = [
    # storage and backup (not MEGA: rclone to MEGA is how ransomware crews take a network's files, a
    # hunt, 2026-12-07; an upload there is judged as any named server's: an alert, alone never a block)
    "icloud.com", "icloud-content.com", "me.com", "dropbox.com", "dropboxapi.com", "box.com", "boxcloud.com",
    "onedrive.com", "onedrive.live.com", "sharepoint.com", "storage.live.com", "googleapis.com",
    "googleusercontent.com", "drive.google.com", "backblazeb2.com", "backblaze.com", "wasabisys.com",
    "crashplan.com", "carbonite.com", "idrive.com", "pcloud.com", "tresorit.com",
    "sync.com", "nextcloud.com", "synology.me", "quickconnect.to", "amazonphotos.com", "photos.google.com",
    "flickr.com", "smugmug.com",
    # video upload and live streaming
    "youtube.com", "googlevideo.com", "vimeo.com", "twitch.tv", "live-video.net", "rtmp.youtube.com",
    # calls and conferencing (their TCP fallbacks)
    "zoom.us", "teams.microsoft.com", "skype.com", "webex.com", "whatsapp.net", "facetime.apple.com",
    "discord.gg", "discord.media",
]
# ALPN protocols (RFC 7301) that name the application a ClientHello without a server name talks:
# the hello's claim, taken as a server name is (a named server: the higher bar, alone never a block).
# Syncthing finds its peers and relays by its own discovery, never by DNS, and sends no server name,
# so without these a 60 MB folder synced to the owner's device at another home blocked that device.
# Web protocols (h2, http/1.1) are not here: a program posting to https://<bare address>/ offers them.
APP_PROTOCOLS = {"bep/1.0": "Syncthing", "bep-relay": "a Syncthing relay"}
# VPN protocols a client's first bytes name (the decoder's "tunnel" events, appdecode.service): a
# tunnel's server relays its user's traffic to anywhere, so what goes up through it is the user's
# every upload (a laptop's nightly backup, 1.2 GB through a VPN app's OpenVPN-over-TCP server, chosen
# by address, blocked that server and, with the app's kill switch, the laptop's Internet: a hunt,
# 2026-12-07). That connection's upload is capped as a named server's, at an unnamed address's bar.
TUNNELS = {"openvpn": "OpenVPN"}
# Networks of applications whose clients reach their servers by address, never by a DNS name, with
# the list their owner publishes. Telegram's apps carry their data centres' addresses built in and
# speak MTProto (no TLS hello, no name) to them, so a video sent from a phone, 100 MB up and a few kB
# of acknowledgements back, blocked the data centre the whole house's Telegram uses. An upload to one
# of these is capped as a named server's (alone never a block) at an unnamed address's bar, never
# allowed: a stealer posting through MTProto reaches the same addresses (a bot's api.telegram.org is
# named by DNS anyway).
APP_NETWORKS = {
    "Telegram": ("91.108.56.0/22", "91.108.4.0/22", "91.108.8.0/22", "91.108.16.0/22", "91.108.12.0/22",
                 "149.154.160.0/20", "91.105.192.0/23", "91.108.20.0/22", "185.76.151.0/24",
                 "2001:b28:f23d::/48", "2001:b28:f23f::/48", "2001:67c:4e8::/48", "2001:b28:f23c::/48",
                 "2a0a:f280::/32"),  # core.telegram.org/resources/cidr.txt, 2024
}
_MIN_FLOW_BYTES = 16_384
_MAX_OPEN = 65_536


class _Pair:
    __slots__ = ("down", "emitted", "emitted_threat", "first", "index", "last", "tunnel", "up")

    def __init__(self, tunnel: str | None = None) -> None:
        self.tunnel = tunnel  # the VPN protocol (TUNNELS) of the connections summed here, or None
        self.index = -1
        self.up = self.down = self.emitted = 0
        self.emitted_threat = 0.0
        self.first = self.last = 0.0


# what the intake hands a pair whose upload passed the bar and the ratio: (src, dst, pair, flow) -> evidence
Judge = Callable[[str, str, _Pair, Flow], Sequence[Evidence]]


class Intake:
    """The detector's per-flow path and state, one call per flow: the early tests, the open
    connections' reports and the per-pair sums. `on_flow` answers NO_EVIDENCE for a flow that
    carried under 16 kB both ways (most flows: one comparison), one with no packet back (a flow
    file without a byte split, or no answer: TCP sends ACKs back), one that is not TCP, one seen
    backwards (a well-known source port, an ephemeral destination port: a download), one to a
    local server, and one whose pair's upload is below the bar or the ratio; it hands the other
    pairs to `judge(src, dst, pair, flow)`. The readable twin of the compiled `_exfil.Intake`
    (make_intake chooses, tests/test_detect_compiled.py holds them equal).

    `pairs` ((client, server) -> its window's sums, at most `max_pairs`, least recently opened
    first), `open` (a long connection's bytes already counted from its reports: 5-tuple ->
    (up, down), at most _MAX_OPEN) and `tls_names` ((client, server) -> the name the client asked
    that server for in its TLS ClientHello, at most `max_tls_names`; `on_app`, one call per hello)
    are bounded maps (slipsq.lru); `local` is prefixes.is_local."""

    __slots__ = ("bar", "judge", "local", "max_pairs", "max_tls_names", "open", "pairs", "ratio", "tls_names",
                 "tunnels", "window")

    def __init__(self, window: float, bar: int, ratio: float, max_pairs: int, local: Callable[[str], bool],
                 judge: Judge, max_tls_names: int = 65_536) -> None:
        self.window, self.bar, self.ratio, self.max_pairs = window, bar, ratio, max_pairs
        self.max_tls_names = max_tls_names
        self.local, self.judge = local, judge
        # (client, server) -> its window's sums; a VPN tunnel's connections: (client, server, protocol)
        self.pairs: OrderedDict[tuple[str, ...], _Pair] = new()
        self.open: OrderedDict[tuple[str, int, str, int], tuple[int, int]] = new()
        self.tls_names: OrderedDict[tuple[str, str], str] = new()
        self.tunnels: OrderedDict[tuple[str, int, str, int], str] = new()

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        """A TLS ClientHello: remember the name this client asked this server for (or, when it
        named none, an application protocol of APP_PROTOCOLS it offered). A "tunnel" event (a
        connection's first bytes were a VPN client's, TUNNELS): remember its protocol."""
        if event.kind == "tls":
            name = event.data.get("sni")
            if not (isinstance(name, str) and name):
                name = event.data.get("alpn")
                if not (isinstance(name, str) and name in APP_PROTOCOLS):
                    return NO_EVIDENCE
        elif event.kind == "tunnel":
            name = event.data.get("protocol")
            if isinstance(name, str) and name in TUNNELS:  # that connection's, not the server's: below
                put(self.tunnels, (event.saddr, event.sport, event.daddr, event.dport), name, self.max_tls_names)
            return NO_EVIDENCE
        else:
            return NO_EVIDENCE
        put(self.tls_names, (event.saddr, event.daddr), name, self.max_tls_names)
        return NO_EVIDENCE

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if flow.sbytes + flow.dbytes < _MIN_FLOW_BYTES or flow.dpkts == 0 or flow.proto != "tcp":
            return NO_EVIDENCE
        if denied(flow):  # its server reset segments it took for no connection of its own: forged
            return NO_EVIDENCE
        if flow.sport < 1024 <= flow.dport:  # a server's port as the source: seen backwards
            return NO_EVIDENCE
        src, dst = flow.saddr, flow.daddr
        up, down = flow.sbytes, flow.dbytes
        if flow.is_report:  # a long connection still open: count what is new since its last report
            fkey = (src, flow.sport, dst, flow.dport)
            seen = self.open.get(fkey)
            put(self.open, fkey, (up, down), _MAX_OPEN)
            if seen is not None:
                up, down = up - seen[0], down - seen[1]
        elif self.open:  # it closed: its reports counted part of it already
            seen = self.open.pop((src, flow.sport, dst, flow.dport), None)
            if seen is not None:
                up, down = up - seen[0], down - seen[1]
        # a VPN tunnel's connection (its first bytes said so) sums in a pair of its own: an upload on
        # another connection to that server is judged as ever (one hello must not license them all)
        tunnel = None
        if self.tunnels:
            conn = (src, flow.sport, dst, flow.dport)
            tunnel = self.tunnels.get(conn)
            if tunnel is not None and flow.closed_by in ("fin", "rst"):  # it ended: its 5-tuple is free again
                del self.tunnels[conn]
        key: tuple[str, ...] = (src, dst) if tunnel is None else (src, dst, tunnel)
        pair = self.pairs.get(key)
        if pair is None:
            if self.local(dst):
                return NO_EVIDENCE
            pair = touch(self.pairs, key, lambda: _Pair(tunnel), self.max_pairs)
        index = int(flow.end // self.window)  # the bytes arrived by its end (a report: since the last one)
        if index > pair.index:
            pair.index, pair.up, pair.down, pair.emitted, pair.emitted_threat = index, 0, 0, 0, 0.0
            pair.first = flow.start
        pair.up += up
        pair.down += down
        if flow.end > pair.last:
            pair.last = flow.end
        if pair.up < self.bar or pair.up < self.ratio * pair.down:
            return NO_EVIDENCE
        return self.judge(src, dst, pair, flow)


def _app_networks() -> PrefixSet[str]:
    nets: PrefixSet[str] = PrefixSet()
    for app, networks in APP_NETWORKS.items():
        for net in networks:
            nets.add(net, app)
    return nets


def _named_by(names: set[str], tls_name: str | None, app: str | None = None, tunnel: str | None = None) -> str:
    """What named the server, for the description: a DNS answer, the client's hello, the first bytes
    of a VPN client, an application's published network, or nothing."""
    if names:
        return sorted(names)[0]
    if tunnel:
        return (f"its client's first bytes opened an {TUNNELS[tunnel]} tunnel: a VPN server, whose uploads "
                "are its user's; no DNS answer the house trusts named it")
    if app:
        return f"in {app}'s published networks, whose apps connect by address; no DNS answer named it"
    if not tls_name:
        return "no DNS answer named it"
    said = (f"its TLS hello named no server but offered {tls_name}: {APP_PROTOCOLS[tls_name]}"
            if tls_name in APP_PROTOCOLS else f"TLS name {tls_name}")
    return f"{said}; no DNS answer the house trusts named it"


def make_intake(window: float, bar: int, ratio: float, max_pairs: int, local: Callable[[str], bool],
                judge: Judge, max_tls_names: int = 65_536) -> Intake:
    """The compiled Intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._exfil")
    cls: type[Intake] = Intake if fast is None else fast.Intake
    return cls(window, bar, ratio, max_pairs, local, judge, max_tls_names)


class Exfil(Detector):
    name = "exfil"
    evidence_kinds = ("exfiltration",)
    # the names clients ask servers for in their TLS ClientHellos; first bytes that open a VPN tunnel
    app_kinds = frozenset({"tls", "tunnel"})
    options = (
        Option("exfil.min_bytes", 50_000_000, "bytes one host uploads to one server in one window before it is "
               "judged when DNS named the server; 3x is high, 10x critical", positive, "> 0"),
        Option("exfil.min_bytes_unnamed", 10_000_000, "bytes one host uploads in one window to a server no DNS "
               "answer named before it is judged; 2x is high, 3x critical", positive, "> 0"),
        Option("exfil.ratio", 10.0, "the upload must be at least this many times what came back", positive, "> 0"),
        Option("exfil.allow_domains", DEFAULT_ALLOW_DOMAINS, "servers whose DNS names end with one of these are "
               "never judged (cloud storage, backup, photo and video uploads, calls)"),
        Option("exfil.max_pairs", 100_000, "(client, server) pairs counted at most (least recently used "
               "forgotten first)", positive, "> 0"),
        Option("exfil.max_tls_names", 65_536, "(client, server) pairs whose TLS ClientHello name is remembered "
               "(least recently seen forgotten first)", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.min_bytes: int = self.opt("min_bytes")
        self.min_unnamed: int = self.opt("min_bytes_unnamed")
        self.bar = min(self.min_bytes, self.min_unnamed)  # below it no pair can be judged
        self.ratio: float = self.opt("ratio")
        self.allow_domains = tuple(d.lower().strip(".") for d in self.opt("allow_domains"))
        self.app_networks = _app_networks()  # address -> the application whose network holds it
        self.max_pairs: int = self.opt("max_pairs")
        self.intake = make_intake(self.window, self.bar, self.ratio, self.max_pairs, is_local, self._judge,
                                  self.opt("max_tls_names"))
        self.pairs = self.intake.pairs  # (client, server) -> its window's sums
        self.open = self.intake.open  # a long connection's bytes already counted from its reports
        self.tls_names = self.intake.tls_names  # (client, server) -> the name asked for in its TLS hello
        # the engine calls on_flow once per flow: hand it the compiled path itself (the Python frame
        # of a method that only calls it would cost more than the compiled tests)
        self.on_flow = self.intake.on_flow  # type: ignore[method-assign]
        self.on_app = self.intake.on_app  # type: ignore[method-assign]

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        return self.intake.on_flow(flow)  # (not called by the engine: see __init__)

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        return self.intake.on_app(event)  # (not called by the engine: see __init__)

    def _allowed_name(self, names: set[str]) -> bool:
        for name in names:
            n = name.lower().rstrip(".")
            if any(n == d or n.endswith("." + d) for d in self.allow_domains):
                return True
        return False

    def _judge(self, src: str, dst: str, p: _Pair, flow: Flow) -> Sequence[Evidence]:
        names = self.ctx.dns_names.get(dst) or set()
        # a name the client itself asked this server for: it knew one, so it resolved one, maybe over
        # encrypted DNS the gateway cannot read. The server counts as named (the higher bar, the cap);
        # never as an allowed one: the ClientHello is the client's claim
        tls_name = None if names else self.tls_names.get((src, dst))
        # a VPN tunnel's connections (their own pair), an application that reaches its servers by
        # built-in address (APP_NETWORKS): they say which application, not which server, so the bar
        # stays an unnamed address's (reported from 10 MB, as before) and only the block is withheld
        tunnel = None if names or tls_name else p.tunnel
        app = None if names or tls_name or tunnel else self.app_networks.lookup(dst)
        if names or tls_name:
            m = self.min_bytes
            threat = CRITICAL if p.up >= 10 * m else HIGH if p.up >= 3 * m else MEDIUM if p.up >= m else 0.0
        else:
            m = self.min_unnamed
            threat = CRITICAL if p.up >= 3 * m else HIGH if p.up >= 2 * m else MEDIUM if p.up >= m else 0.0
        if not threat or not report_due(p, p.up, threat):
            return NO_EVIDENCE
        if (names and self._allowed_name(names)) or self.ctx.peers.is_peer(src, dst, flow.dport, flow.end,
                                                                           self.ctx.dns_names):
            return NO_EVIDENCE  # judged and allowed: not again until it doubles
        named = bool(names or tls_name or tunnel or app)
        confidence = min(1.0, p.up / max(1, p.down) / (2 * self.ratio)) * (0.55 if named else 1.0)
        desc = (f"large upload from {src} to {dst} ({_named_by(names, tls_name, app, tunnel)}): "
                f"{p.up / 1e6:.1f} MB sent, {p.down / 1e6:.1f} MB received in {p.last - p.first:.0f}s")
        may_block = is_local(src)
        if not may_block:
            desc += f"; {src} is not a local address (a private range or network.local): reported, never blocks"
        elif named:
            desc += "; a named server: alone it does not block"
        return [Evidence(ts=max(p.last, p.index * self.window), detector=self.name, offender=dst, src_ip=src,
                         dst_ip=dst, dst_port=flow.dport, proto="tcp", description=desc, threat_level=threat,
                         confidence=round(confidence, 3), label="exfiltration", key=f"exfil:{dst}",
                         flows=(flow,), may_block=may_block)]
