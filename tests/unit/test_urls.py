"""urls.py: URLs from specs are parsed and matched field by field, never as text."""

from __future__ import annotations

import pytest
from servedmodel_operator.parts.admission.urls import (
    ParsedUrl,
    UrlRefused,
    allowed,
    host_pattern,
    parse_pattern,
    parse_patterns,
    parse_url,
)

MONITORING = parse_pattern("http://*.monitoring.svc:9090")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("http://prometheus.monitoring.svc:9090", ("http", "prometheus.monitoring.svc", 9090, "")),
        ("HTTP://Prometheus.MONITORING.svc:9090/", ("http", "prometheus.monitoring.svc", 9090, "")),
        ("https://prom.example", ("https", "prom.example", 443, "")),
        ("http://prom.example:80/prometheus/", ("http", "prom.example", 80, "/prometheus")),
        ("http://127.0.0.1:9090", ("http", "127.0.0.1", 9090, "")),
        ("http://[::1]:9090", ("http", "::1", 9090, "")),
        ("http://[0:0:0:0:0:0:0:1]", ("http", "::1", 80, "")),
        ("http://[FE80::1]:8080/x", ("http", "fe80::1", 8080, "/x")),
        ("http://localhost:08080", ("http", "localhost", 8080, "")),
    ],
)
def test_urls_parse_to_their_normal_form(text: str, parsed: tuple[str, str, int, str]) -> None:
    assert parse_url(text) == ParsedUrl(*parsed)


def test_the_normal_form_drops_default_ports_and_brackets_ipv6() -> None:
    assert parse_url("HTTPS://A.b:443/").url == "https://a.b"
    assert parse_url("http://[0::1]:9090/p").url == "http://[::1]:9090/p"
    assert parse_url("http://a.b:8080/x/y/").url == "http://a.b:8080/x/y"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://a.monitoring.svc:9090@evil.invalid", "userinfo"),
        ("http://user:pw@a.monitoring.svc:9090", "userinfo"),
        ("http://metadata.evil.invalid/?.monitoring.svc:9090", "a query"),
        ("http://metadata.evil.invalid#.monitoring.svc:9090", "a fragment"),
        ("http://a%2emonitoring.svc:9090", "percent escapes"),
        ("http://a.monitoring.svc:9090/%2e%2e/admin", "percent escapes"),
        ("http://a.monitoring.svc:9090/../admin", "'..' path segments"),
        ("http://a.monitoring.svc:9090/./x", "'..' path segments"),
        ("http://a.monitoring.svc:9090//evil.invalid", "empty path segment"),
        ("http://evil.invalid\\@a.monitoring.svc:9090", "backslash"),
        ("http://a.monitoring.svc.:9090", "trailing dot"),
        ("http://a..monitoring.svc:9090", "empty host label"),
        ("http://a.monitoring.svc :9090", "whitespace"),
        ("http://a.monitoring.svc:9090/\x1b[2J", "control characters"),
        ("http://\u0430.monitoring.svc:9090", "non-ASCII"),
        ("ftp://a.monitoring.svc:9090", "only http and https"),
        ("a.monitoring.svc:9090", "no scheme"),
        ("//a.monitoring.svc:9090", "no scheme"),
        ("http://:9090", "no host"),
        ("http://a_b.monitoring.svc:9090", "not a DNS label"),
        ("http://a.monitoring.svc:", "empty port"),
        ("http://a.monitoring.svc:0", "1 to 65535"),
        ("http://a.monitoring.svc:65536", "1 to 65535"),
        ("http://a.monitoring.svc:+80", "1 to 65535"),
        ("http://a.monitoring.svc:9090:80", "1 to 65535"),
        ("http://[::1", "closing ']'"),
        ("http://[::1]x:80", "after the IPv6 literal"),
        ("http://[fe80::1%25eth0]:80", "percent escapes"),
        ("http://[not-an-address]", "not an IPv6 address"),
        ("http://0x7f.0.0.1:9090", "dotted decimal"),
        ("http://2130706433:9090", "dotted decimal"),
        ("http://0177.0.0.1:9090", "dotted decimal"),
        ("http://127.1:9090", "dotted decimal"),
        ("http://*.monitoring.svc:9090", "not a DNS label"),
        ("", "empty"),
    ],
)
def test_hostile_urls_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        parse_url(text)
    assert reason in refused.value.reason
    assert not MONITORING.matches(text)


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring.svc:9090",
        "http://PROMETHEUS.Monitoring.SVC:9090/",
        "http://thanos-query.monitoring.svc:9090/prefix",
    ],
)
def test_a_label_glob_admits_one_label(url: str) -> None:
    assert MONITORING.matches(url)


@pytest.mark.parametrize(
    "url",
    [
        # The examples that matched the old fnmatch over the raw URL.
        "http://metadata.evil.invalid/?.monitoring.svc:9090",
        "http://metadata.evil.invalid/x.monitoring.svc:9090",
        "http://evil.invalid:9090/.monitoring.svc:9090",
        # * never crosses a dot, nor matches a missing label.
        "http://a.b.monitoring.svc:9090",
        "http://monitoring.svc:9090",
        "http://evil.invalid.monitoring.svc.evil.invalid:9090",
        "http://prometheus.monitoring.svc.evil.invalid:9090",
        # Another port, another scheme, the default port when the pattern names one.
        "http://prometheus.monitoring.svc:9091",
        "http://prometheus.monitoring.svc",
        "https://prometheus.monitoring.svc:9090",
    ],
)
def test_what_a_text_glob_admitted_is_not_admitted(url: str) -> None:
    assert not MONITORING.matches(url)


def test_ports_default_by_scheme_and_star_takes_any() -> None:
    plain = parse_pattern("http://prometheus.monitoring")
    assert plain.matches("http://prometheus.monitoring:80")
    assert plain.matches("http://prometheus.monitoring")
    assert not plain.matches("http://prometheus.monitoring:9090")
    tls = parse_pattern("https://prometheus.monitoring")
    assert tls.matches("https://prometheus.monitoring:443")
    assert not tls.matches("https://prometheus.monitoring:80")
    loopback = parse_pattern("http://127.0.0.1:*")
    assert loopback.matches("http://127.0.0.1:41234") and loopback.matches("http://127.0.0.1")
    assert not loopback.matches("http://127.0.0.2:41234")
    assert not loopback.matches("http://127.0.0.1.evil.invalid:41234")


def test_ipv6_literals_match_the_same_address_only() -> None:
    pattern = parse_pattern("http://[::1]:9090")
    assert pattern.matches("http://[0:0:0:0:0:0:0:1]:9090")
    assert pattern.matches("http://[::0:1]:9090")
    assert not pattern.matches("http://[::ffff:127.0.0.1]:9090")
    assert not pattern.matches("http://[::2]:9090")
    # A DNS pattern never admits a literal, whatever its labels.
    assert not parse_pattern("http://*:9090").matches("http://[::1]:9090")


def test_a_pattern_path_admits_itself_and_below_by_segments() -> None:
    pattern = parse_pattern("https://metrics.example/prometheus")
    assert pattern.matches("https://metrics.example/prometheus")
    assert pattern.matches("https://metrics.example/prometheus/")
    assert pattern.matches("https://metrics.example/prometheus/sub")
    assert not pattern.matches("https://metrics.example/prometheus-other")
    assert not pattern.matches("https://metrics.example/")
    assert not pattern.matches("https://metrics.example/prometheus/../admin")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://user@*.monitoring.svc", "userinfo"),
        ("http://*.monitoring.svc/?x", "a query"),
        ("http://*.monitoring.svc/p*", "'*' in the path"),
        ("http://[::*]", "'*' in an IPv6 literal"),
        ("*.monitoring.svc:9090", "no scheme"),
        ("http://*.monitoring.svc:90*", "1 to 65535"),
        ("http://*.monitoring.svc.", "trailing dot"),
    ],
)
def test_bad_patterns_are_refused(text: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        parse_pattern(text)
    assert reason in refused.value.reason


def test_partial_label_globs_and_ipv4_globs() -> None:
    pattern = parse_pattern("http://prom-*.monitoring.svc:9090")
    assert pattern.matches("http://prom-0.monitoring.svc:9090")
    assert pattern.matches("http://prom-.monitoring.svc:9090") is False  # not a DNS label
    assert not pattern.matches("http://thanos.monitoring.svc:9090")
    subnet = parse_pattern("http://10.0.*.*:9090")
    assert subnet.matches("http://10.0.3.4:9090")
    assert not subnet.matches("http://10.1.3.4:9090")
    assert not subnet.matches("http://10.0.3.0x4:9090")


def test_host_patterns_never_cross_a_dot() -> None:
    regex = host_pattern("*.models.example.com")
    assert regex.match("fraud.models.example.com")
    assert not regex.match("a.fraud.models.example.com")
    assert not regex.match("models.example.com")
    assert not regex.match("fraud.models.example.com.evil")
    assert not regex.match("fraud.modelsxexample.com")  # a '.' in a pattern is a dot


def test_patterns_from_a_flag_and_the_verdict() -> None:
    patterns = parse_patterns(" http://*.monitoring.svc:9090 , ,http://127.0.0.1:* ")
    assert [p.text for p in patterns] == ["http://*.monitoring.svc:9090", "http://127.0.0.1:*"]
    parsed, why = allowed(patterns, "HTTP://Prom.Monitoring.svc:9090/")
    assert parsed is not None and parsed.url == "http://prom.monitoring.svc:9090" and why == ""
    parsed, why = allowed(patterns, "http://a.monitoring.svc:9090@evil.invalid")
    assert parsed is None and "userinfo" in why
    parsed, why = allowed(patterns, "http://evil.invalid:9090")
    assert parsed is None and why == "no allowed pattern matches http://evil.invalid:9090"
    assert allowed((), "http://prom.monitoring.svc:9090")[0] is None
