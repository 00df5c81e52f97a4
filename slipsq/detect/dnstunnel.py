"""DNS tunnel: one host asking for hundreds of different encoded names under one domain.

A DNS tunnel (dnscat2, iodine, dns2tcp, a C&C's DNS channel) carries its data in the query names:
each query is a fresh, long, encoded label under the attacker's domain ("3f9a0c...e1.c2.example"),
through the house's own resolver, which forwards it to the attacker's name server. Nothing else in
slipsq sees it: the resolver is protected, DNS to it is no beacon, and the answers are not NXDOMAIN.
Per client (the host a DNS answer goes to), site (the registered domain, dga.site) and judge window
(index = int(answer time // judge.window)) it counts the distinct query names that carry data: the
part below the site, dots removed and lowercased, has at least `MIN_CHARS` (20) characters and
looks random (dga.looks_random: hex, base32 and base64 do; words and short CDN labels do not),
asked for a record a tunnel carries its answers in (`DATA_TYPES`: TXT, NULL, MX, SRV, private
use). Tunnels ask for those (dnscat2: TXT, MX and CNAME in turn; iodine: NULL, else TXT, SRV, MX);
a web page cannot: the pictures of a page, an ad or a mail with 500 random subdomains of a domain
nobody owns make a browser ask for addresses, and counted they blocked the house's host that read
it (a review). CNAME is not counted (dnscat2's CNAME queries go uncounted): Suricata's eve
version 1 logs an address lookup answered through a CNAME as one, and an unknown type (0: eve v1's
NXDOMAIN) is not counted either; nor are a resolver's own NS, SOA, DS and DNSKEY queries.
It returns Evidence only.

Arithmetic (n = distinct encoded names under one site in the window, T = `dnstunnel.names`, 100):
  threat     = medium for n >= T, high for n >= 3 T, critical for n >= 5 T
  confidence = 0.5 + 0.5 x min(1, n / 5 T)
  so 100 names score 0.5 x 0.6 = 0.3 (an alert), 300 score 0.8 x 0.8 = 0.64, 500 score 1.0 and block
  by themselves: dnscat2 asks about one name a second (500 in under 10 minutes), iodine hundreds a
  second. Evidence is emitted when n first reaches T, again when it doubles or the threat rises; one
  key per client (its sites are one finding, at its busiest site's count: 100 names under each of
  four sites are not 4 x 0.3). The offender is the client: the resolver is the house's, and the
  attacker's name server is never contacted by the client. A client that is not a local address
  is reported, never blocked.

False-positive guards:
* Services that use DNS as a lookup API and put a hash or a key in the name: antivirus reputation
  lookups (Sophos, McAfee, ESET, ...), mail blocklists (Spamhaus, SpamCop; Abusix's keyed zone,
  whose reject reason Postfix asks as TXT), a mail server's SPF and DKIM lookups of the big senders
  (Proofpoint's hosted SPF, Amazon SES, SendGrid) ask hundreds of encoded names under one domain.
  Names under `dnstunnel.allow_domains` are not counted.
* CDNs and clouds name their endpoints with random-looking labels (d1a2b3c4d5e6f7.cloudfront.net,
  rr3---sn-4g5e6nsz.googlevideo.com): they are short (under 20 characters below the site), and a
  client asks for a handful an hour, not hundreds.
* Search domains and reverse lookups: names under `dga.local_suffixes` (.local, .lan, .arpa ...)
  are not counted.
* Forged answers: the flow table hands up no answer whose query it did not see, so an off-path
  sender cannot make a host look like it asked for hundreds of names. A host on the LAN can: UDP
  queries sent with another LAN host's address get answers sent to that host (the known gap of
  forged LAN sources, which the DGA detector has too; see the README).
Not caught: a slow DNS C&C (Cobalt Strike's DNS beacon asks one name per sleep: 60 an hour at a
60 s sleep, under T), a tunnel that asks for addresses only (iodine -T A, slower), data encoded to
read like words (proquints), labels under 20 characters, a tunnel spread over many domains, queries
whose answers carry no record (the table hands up answers and NXDOMAINs only), DNS over TCP to the
gateway, and DNS the gateway cannot see (DNS over HTTPS; a resolver on the LAN itself; the
gateway's own resolver with `dns.queue_gateway` off).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector
from slipsq.detect.dga import LOCAL_SUFFIXES, WindowCount, client_finding, looks_random, site
from slipsq.flow import AppEvent
from slipsq.lru import Nested, touch
from slipsq.records import Evidence

MIN_CHARS = 20  # characters below the site (dots removed) that make a name carry data
_MAX_KEYS = 65_536  # (client, site) pairs with a count; dnstunnel.max_total_names bounds the names
ALLOW_DOMAINS = ("sophosxl.net", "mcafee.com", "e5.sk", "eset.com", "spamhaus.org", "spamhaus.net",
                 "spamcop.net", "sorbs.net", "barracudacentral.org", "surbl.org", "uribl.com", "dnswl.org",
                 "senderbase.org", "senderscore.com", "mailspike.net", "abuseat.org", "cymru.com", "rspamd.com",
                 "msbl.org", "surriel.com", "abusix.zone", "pphosted.com", "amazonses.com", "sendgrid.net")
# the query types a tunnel carries data back in, and the only ones counted (NULL, MX, TXT, SRV,
# and iodine's private-use type)
DATA_TYPES = frozenset({10, 15, 16, 33, 65399})


class Intake:
    """What every DNS event costs the detector: an answer from port 53 whose query is long enough to
    carry data (MIN_CHARS below a site of at least a few characters) and asks for a type a tunnel
    answers in (DATA_TYPES) goes to `named(event, query)`; any other event (nearly all: short names,
    addresses asked for) is nothing. The readable twin of the compiled `_dns.TunnelIntake`
    (make_intake chooses, tests/test_detect_compiled.py holds them equal): the engine calls it for
    every DNS answer, a third as many as there are flows, without a Python frame for those."""

    __slots__ = ("named",)

    def __init__(self, named: Callable[[AppEvent, str], Sequence[Evidence]]) -> None:
        self.named = named

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        if event.kind != "dns" or event.sport != 53:
            return NO_EVIDENCE
        data = event.data
        query = data.get("query")
        if type(query) is not str or len(query) < MIN_CHARS + 4:  # most names: one comparison
            return NO_EVIDENCE
        if data.get("qtype") not in DATA_TYPES:
            return NO_EVIDENCE
        return self.named(event, query)


def make_intake(named: Callable[[AppEvent, str], Sequence[Evidence]]) -> Intake:
    """The compiled intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._dns")
    cls: type[Intake] = Intake if fast is None else fast.TunnelIntake
    return cls(named)


class DnsTunnel(Detector):
    name = "dnstunnel"
    evidence_kinds = ("dns-tunnel",)
    app_kinds = frozenset({"dns"})
    options = (
        Option("dnstunnel.names", 100, "distinct encoded names under one domain one host asked for in one "
               "window before it is reported; 3x is high, 5x critical (blocks)", positive, "> 0"),
        Option("dnstunnel.max_total_names", 65_536, "encoded names remembered over all (host, domain) pairs "
               "(the least recently active pairs' are forgotten first)", positive, "> 0"),
        Option("dnstunnel.allow_domains", list(ALLOW_DOMAINS), "names ending with one of these are never "
               "counted (antivirus lookups, mail blocklists: DNS used as a lookup API)"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.t: int = self.opt("names")
        local = self.cfg["dga.local_suffixes"] if "dga.local_suffixes" in self.cfg.options else LOCAL_SUFFIXES
        # a tunnel's domain must be delegated in public DNS: .box is (since 2024), while routers use it
        # locally too (the DGA detector skips it); the other local suffixes cannot be delegated
        skip = [*self.opt("allow_domains"), *(s for s in local if s.strip(".").lower() != "box")]
        self.skip = tuple("." + s.lower().strip(".") for s in skip)
        self.keys: OrderedDict[tuple[str, str], WindowCount] = OrderedDict()
        # (client, site) -> {encoded name: None}, in that pair's window; at most 5 T a pair (past
        # critical a count says nothing more)
        self.names: Nested[tuple[str, str], str, None] = Nested(_MAX_KEYS, 5 * self.t, self.opt("max_total_names"))
        self.intake = make_intake(self._named)
        # the engine calls on_app for every DNS answer: hand it the intake itself (compiled: no Python
        # frame for the names that cannot carry data, nearly all of them)
        self.on_app = self.intake.on_app  # type: ignore[method-assign]

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        return self.intake.on_app(event)  # (not called by the engine: see __init__)

    def _named(self, event: AppEvent, query: str) -> Sequence[Evidence]:
        """A long name of a data type from port 53 (the intake let it through): count it if the part
        below its site looks encoded."""
        name = query.lower().rstrip(".")
        if name.endswith(self.skip):  # (a name of no dot, or a skipped domain itself, has nothing below it)
            return NO_EVIDENCE
        s = site(name)
        below = name[:len(name) - len(s)].replace(".", "")
        if len(below) < MIN_CHARS or not looks_random(below):
            return NO_EVIDENCE
        return self._count(event, name, s)

    def _count(self, event: AppEvent, name: str, s: str) -> Sequence[Evidence]:
        client = event.daddr
        key = (client, s)
        k = touch(self.keys, key, WindowCount, _MAX_KEYS)
        if k.seen(event.ts, self.window):
            self.names.clear(key)
        names = self.names.touch(key)
        if name in names or len(names) >= self.names.max_inner:
            return NO_EVIDENCE
        self.names.put(key, name, None)
        n = len(names)
        level = k.report(n, self.t)
        if level is None:
            return NO_EVIDENCE
        sample = ", ".join(list(names)[-2:])
        desc = (f"DNS tunnel from {client}: {n} different encoded names under {s} in "
                f"{k.last - k.first:.0f}s ({k.names} asked), e.g. {sample}")
        return client_finding(self.name, event, desc, level, "dns-tunnel")
