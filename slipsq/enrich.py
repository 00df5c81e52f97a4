"""GeoIP and ASN enrichment of alerts: country, AS number and AS organisation of an IP, read from
MaxMind DB files (GeoLite2/GeoIP2 City or Country, and ASN) with the `maxminddb` reader.

Configured by `enrich.city_db` (or `enrich.country_db`) and `enrich.asn_db`; empty means no
enrichment. A configured file that is missing or not a MaxMind DB gives one warning naming the key
and the file, and that enrichment is off: it is never a crash, and never blocks detection.
`make_enrichers(config)` returns the callables the engine puts in `Context.enrichers`; each maps an
IP to a dict ({country, asn, org}, only the fields found; {} for private or unknown addresses),
through a bounded LRU cache. This module reads the database files; it never touches the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from slipsq.config import Option

log = logging.getLogger("slipsq.enrich")

OPTIONS = (
    Option("enrich.city_db", "", "MaxMind City database (.mmdb) for the country of alert IPs; empty: none"),
    Option("enrich.country_db", "", "MaxMind Country database (.mmdb), used when enrich.city_db is empty"),
    Option("enrich.asn_db", "", "MaxMind ASN database (.mmdb): AS number and organisation; empty: none"),
    Option("enrich.cache", 65536, "IPs whose enrichment is remembered (LRU)", lambda v: v > 0, "> 0"),
)

Enricher = Callable[[str], dict[str, Any]]


def _setting(config: Any, key: str) -> Any:
    """The configured value, or the default when the integrator has not declared the enrich options."""
    try:
        return config[key]
    except KeyError:
        return next(o.default for o in OPTIONS if o.key == key)


def open_db(key: str, path: str, warnings: list[str] | None = None) -> Any | None:
    """A maxminddb Reader, or None with a warning ("enrich.asn_db: /x.mmdb: why; no enrichment")."""
    import maxminddb

    try:
        return maxminddb.open_database(path)
    except FileNotFoundError:
        why = "file not found"
    except IsADirectoryError:
        why = "is a folder, not a .mmdb file"
    except PermissionError:
        why = "permission denied"
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as e:
        why = f"not a valid MaxMind DB ({e})"
    msg = f"{key}: {path}: {why}; that enrichment is off"
    log.warning("%s", msg)
    if warnings is not None:
        warnings.append(msg)
    return None


def _get(reader: Any, ip: str) -> dict[str, Any]:
    try:
        rec = reader.get(ip)
    except Exception:  # not an IP, IPv6 in an IPv4-only DB, or a corrupt record: no enrichment, no crash
        return {}
    return rec if isinstance(rec, dict) else {}


def make_enrichers(config: Any, warnings: list[str] | None = None) -> list[Enricher]:
    """The enrichers for `Context.enrichers`: [] when nothing is configured or nothing could be opened."""
    geo_key = "enrich.city_db" if _setting(config, "enrich.city_db") else "enrich.country_db"
    geo_path, asn_path = _setting(config, geo_key), _setting(config, "enrich.asn_db")
    geo = open_db(geo_key, geo_path, warnings) if geo_path else None
    asn = open_db("enrich.asn_db", asn_path, warnings) if asn_path else None
    if geo is None and asn is None:
        return []

    @lru_cache(maxsize=int(_setting(config, "enrich.cache")))
    def lookup(ip: str) -> tuple[tuple[str, Any], ...]:
        out: list[tuple[str, Any]] = []
        if geo is not None:
            rec = _get(geo, ip)
            country = rec.get("country") or rec.get("registered_country") or {}
            if isinstance(country, dict) and country.get("iso_code"):
                out.append(("country", str(country["iso_code"])))
        if asn is not None:
            rec = _get(asn, ip)
            if rec.get("autonomous_system_number") is not None:
                out.append(("asn", int(rec["autonomous_system_number"])))
            if rec.get("autonomous_system_organization"):
                out.append(("org", str(rec["autonomous_system_organization"])))
        return tuple(out)

    def enrich(ip: str) -> dict[str, Any]:
        return dict(lookup(ip))  # a fresh dict per call: callers may keep or change it

    enrich.cache_info = lookup.cache_info  # type: ignore[attr-defined]
    return [enrich]
