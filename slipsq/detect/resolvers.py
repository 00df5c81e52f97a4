"""Whose DNS answers teach names: the resolvers the house trusts.

Names learnt from DNS answers (ctx.dns_names) let traffic pass: a beacon to a server named
`time.windows.com` (beacon.allow_domains), a big upload to one named `drive.google.com`
(exfil.allow_domains), a peer with a name (not P2P). A name is only what a DNS server *claims*: a
C&C that runs its own DNS server answers "time.windows.com is me" to the one host it infected, and
its beacons and uploads went unreported. So names are learnt only from answers by a resolver the
house has reason to trust:

* one of your own network (prefixes.is_local: the router, a Pi-hole, a LAN DNS server), answering
  one of your own hosts (a review forged a "query" from the C&C's address to the infected host's own
  port 53, hairpinned through the gateway, and had the host answer it);
* one the gateway protects (the allow list: `allow.ips`, and inline the gateway's own resolvers,
  `allow.infrastructure`);
* a public resolver in `dns.trusted_resolvers` (the well-known anycast services some devices ask
  directly, hard-coded).

and only an answer from port 53: an infected host sent one unsolicited mDNS "response" (port 5353,
which the flow table's direction rule for port 53 does not cover) naming its C&C drive.google.com.
An answer from any other server still goes to the activity log; its names are not learnt. Not
"any resolver two clients asked": an infected host can forge a second client's query (the answer
then travels to that client, past the gateway), or ask from two of its IPv6 addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from slipsq.addr import parse_ip, parse_ip_int
from slipsq.allow import AllowList
from slipsq.detect.prefixes import is_local


class Resolvers:
    """`trusts(resolver, port, client)`: may the names in this answer be learnt (module docstring)."""

    def __init__(self, listed: Iterable[str], allow: AllowList) -> None:
        # canonical text, as the flow table and the log readers write addresses
        self.listed = frozenset(str(parse_ip(a)) for a in listed)
        self.allow = allow
        self.untrusted = 0  # answers whose names were not learnt

    def trusts(self, resolver: str, port: int, client: str) -> bool:
        """Whether `resolver`, answering `client` from `port`, teaches names. One call per DNS answer
        that carries addresses: the local test and the list are a cached dict lookup and a set
        lookup; the allow list, asked last, caches its own answers. The compiled app loop runs this
        test in C (slipsq/_dispatch.pyx `_trusts`, held equal by test_dns_trust): change both."""
        if port == 53 and (resolver in self.listed or (is_local(resolver) and is_local(client))
                           or self.protected(resolver)):
            return True
        self.untrusted += 1
        return False

    def protected(self, resolver: str) -> bool:
        """On the allow list, or an address the gateway protects. Text that is no address is
        protected from blocking (AllowList.why_protected says so), never trusted: a log line's."""
        return (isinstance(resolver, str) and parse_ip_int(resolver) is not None
                and self.allow.why_protected(resolver) is not None)
