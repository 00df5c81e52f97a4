"""GeoIP/ASN enrichment from small .mmdb files built with mmdb-writer; missing or corrupt files warn."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import T0, Recorder, config, flow
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect.longconn import LongConnection
from slipsq.enrich import OPTIONS, make_enrichers


def write_db(path: Path, kind: str, entries: dict[str, dict]) -> Path:  # type: ignore[type-arg]
    w = MMDBWriter(ip_version=6, database_type=kind, ipv4_compatible=True)
    for net, rec in entries.items():
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(str(path))
    return path


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[Path, Path]:
    city = write_db(tmp_path / "city.mmdb", "GeoLite2-City", {
        "198.51.100.0/24": {"country": {"iso_code": "NL", "names": {"en": "Netherlands"}}},
        "2001:db8::/32": {"country": {"iso_code": "CZ"}},
        "203.0.113.0/24": {"registered_country": {"iso_code": "BR"}},
    })
    asn = write_db(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "198.51.100.0/24": {"autonomous_system_number": 64500,
                            "autonomous_system_organization": "Example AS"},
    })
    return city, asn


def cfg(**values: object) -> Config:
    return Config([*CORE_OPTIONS, *OPTIONS], {k: v for k, v in values.items()})


def test_country_asn_org(dbs: tuple[Path, Path]) -> None:
    city, asn = dbs
    [enrich] = make_enrichers(cfg(**{"enrich.city_db": str(city), "enrich.asn_db": str(asn)}))
    assert enrich("198.51.100.7") == {"country": "NL", "asn": 64500, "org": "Example AS"}
    assert enrich("2001:db8::1") == {"country": "CZ"}
    assert enrich("203.0.113.1") == {"country": "BR"}
    assert enrich("192.168.1.1") == {} and enrich("not an ip") == {}
    enrich("198.51.100.7")["country"] = "changed"  # callers get their own dict
    assert enrich("198.51.100.7")["country"] == "NL"
    assert enrich.cache_info().hits >= 2  # type: ignore[attr-defined]


def test_country_db_when_no_city_db(dbs: tuple[Path, Path]) -> None:
    [enrich] = make_enrichers(cfg(**{"enrich.country_db": str(dbs[0])}))
    assert enrich("198.51.100.7") == {"country": "NL"}


def test_nothing_configured_means_no_enrichers() -> None:
    assert make_enrichers(cfg()) == []
    assert make_enrichers(Config(CORE_OPTIONS)) == []  # options not declared at all: defaults


def test_missing_or_corrupt_files_warn_and_do_not_crash(tmp_path: Path, dbs: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not a maxmind database" * 10)
    warnings: list[str] = []
    missing = tmp_path / "missing.mmdb"
    out = make_enrichers(cfg(**{"enrich.city_db": str(missing), "enrich.asn_db": str(bad)}), warnings)
    assert out == []
    assert warnings[0] == f"enrich.city_db: {missing}: file not found; that enrichment is off"
    assert warnings[1].startswith(f"enrich.asn_db: {bad}: not a valid MaxMind DB")
    # one good file still works when the other is broken
    [enrich] = make_enrichers(cfg(**{"enrich.city_db": str(dbs[0]), "enrich.asn_db": str(bad)}))
    assert enrich("198.51.100.7") == {"country": "NL"}


def test_alerts_carry_enrichment_through_the_engine(dbs: tuple[Path, Path]) -> None:
    from slipsq.allow import AllowList
    from slipsq.engine import Engine
    from slipsq.runmode import Offline

    c = config([LongConnection])
    rec = Recorder()
    eng = Offline(Engine(c, allow=AllowList(), detectors=[LongConnection]), [rec])
    eng.engine.ctx.enrichers = make_enrichers(cfg(**{"enrich.city_db": str(dbs[0]), "enrich.asn_db": str(dbs[1])}))
    eng.flow(flow(T0, "192.168.1.2", "198.51.100.7", 443, dur=2000))
    eng.finish()
    want = {"country": "NL", "asn": 64500, "org": "Example AS"}
    assert rec.seen[0].to_dict()["enrich"] == {"198.51.100.7": want}  # the private client has none
