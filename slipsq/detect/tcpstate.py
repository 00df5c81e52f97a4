"""How far a TCP connection got, from its flow's state string: whether it was opened (the handshake
completed), a conversation (the server also sent data), or denied (its server reset segments it
took for no connection of its own). Detectors whose evidence blames the server or the client of a
connection count only connections that took place (beacon, brute force, exfiltration, the servers
in use), so that SYNs, SYN-ACKs, RSTs and segments sent with somebody else's address cannot get a
server everyone uses blocked. `_HELD_BY_STATE` is the memo the compiled detectors read in C
(detect/_states.pxd). Data only.
"""

from __future__ import annotations

from slipsq.detect.prefixes import Memo
from slipsq.flow import Flow

# Zeek conn states of a connection whose handshake completed, and of one whose did not (or that
# began unseen: OTH); Suricata's "established", and its "new": a flow that never got established;
# Argus's REQ: a SYN, nothing more
_ESTABLISHED_STATES = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR", "established"})
_NOT_ESTABLISHED_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH", "new", "REQ"})
DENIED, OPENED, CONVERSED, EXCHANGED = -1, 1, 2, 3  # _state_held's levels (0: not opened)


def _state_held(st: str) -> int | None:
    """How far a TCP state string says the connection got (see `opened`, `conversed`, `exchanged`,
    `denied`): DENIED, 0, OPENED, CONVERSED or EXCHANGED; None when it does not say. Data is told by
    the PSH flag, which a sender sets on the segment that ends each write."""
    if "_" in st:  # "<client flags>_<server flags>"
        src, _, dst = st.partition("_")
        if "S" not in src or "A" not in src or "S" not in dst:
            return DENIED if "R" in dst else 0
        if "P" not in dst:
            return OPENED
        return EXCHANGED if "P" in src else CONVERSED
    if st in _ESTABLISHED_STATES:  # the most these states tell
        return EXCHANGED
    if st in _NOT_ESTABLISHED_STATES:
        return 0
    return None


_HELD_BY_STATE = Memo(_state_held, 4096).__getitem__


def opened(f: Flow) -> bool:
    """True when a TCP flow is a whole connection, its handshake completed: the client's SYN, the
    server's SYN-ACK and the client's ACK were seen. Not SYNs sent with somebody else's address (its
    owner answers the SYN-ACK with a RST, never an ACK), not the middle of a connection (a piece
    after a keep-alive gap longer than the idle timeout, or after a forged RST that closed the flow
    but not the connection), not a reply nobody asked for (a SYN-ACK sent to a host that sent no
    SYN). From the state (Argus and the flow table: "<client flags>_<server flags>"; Zeek, Suricata
    and Argus REQ states). A state that does not tell (nfdump's flags of both sides in one, Argus's
    FIN or CON, no state) is taken as opened: without the facts, nothing is held against a flow."""
    said = _HELD_BY_STATE(f.state)
    return said is None or said >= OPENED


def client_silent(f: Flow) -> bool:
    """The server spoke and the client said nothing (the handshake completed, data only from the
    server): a port check that took a banner, or a push to a client that only listens. A state that
    does not tell: False."""
    return _HELD_BY_STATE(f.state) == CONVERSED


def conversed(f: Flow) -> bool:
    """`opened`, and the server sent data: proof of the client's address even against a forger who
    sends the ACK blind as well. A server sends data only once the client acknowledged its SYN-ACK
    with the right number, which a sender off the path never sees. Brute force, whose evidence blames
    the client, counts only these (a state that does not tell: the packets back decide, as
    `unanswered` does)."""
    said = _HELD_BY_STATE(f.state)
    return f.dpkts != 0 if said is None else said >= CONVERSED


def exchanged(f: Flow) -> bool:
    """`conversed`, and the client sent data too. A login attempt always says something (an ssh
    client its version and key exchange, the others their credentials); a port check that connects,
    takes the banner and closes says nothing. A state that does not tell: as `conversed`."""
    said = _HELD_BY_STATE(f.state)
    return f.dpkts != 0 if said is None else said == EXCHANGED


def denied(f: Flow) -> bool:
    """True when the server reset a TCP flow whose opening was not seen: segments it did not take for
    any connection of its own (data forged with somebody's address and no handshake draws exactly
    this). The middle of a real connection (after an idle gap, or after its client's own RST) is not
    denied: its server goes on acknowledging. Exfiltration skips these."""
    return _HELD_BY_STATE(f.state) == DENIED
