"""URLs the operator's policy allows, parsed, never matched as text (pure).

A policy pattern such as `http://*.monitoring.svc:9090` used to be a glob over the whole URL,
so `http://metadata.evil.invalid/?.monitoring.svc:9090` matched it. Here a URL from a spec is
parsed strictly and refused when anything in it could be read two ways; a pattern is parsed
the same way; then scheme, host and port are compared separately:

- scheme: `http` or `https` (any case in the URL, compared lowercase);
- host: compared lowercase, label by label. In a pattern, `*` matches within one label and
  never crosses a `.`: `*.monitoring.svc` matches `prometheus.monitoring.svc`, not
  `a.b.monitoring.svc` nor `monitoring.svc`. An IPv6 literal (`[::1]`) matches only the same
  address, however it is written; an IPv4 address only in its canonical dotted form;
- port: the URL's, or the scheme's default (80, 443); `*` in a pattern matches any port, and a
  pattern without one means the scheme's default;
- path: a pattern with a path admits that path and everything under it (by segments); without
  one, any path.

Refused outright, in URLs and patterns: userinfo (`user@`), a query, a fragment, percent
escapes, backslashes, whitespace and control characters, `.`/`..` path segments, empty host
labels and a trailing dot, hosts that are neither DNS names nor IP literals, IPv6 zone ids,
numeric hosts that are not a canonical IPv4 address (`0x7f.1`, `2130706433`, `0177.0.0.1`).
A request is then sent to `ParsedUrl.url`, the normalised text, never to the author's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

SCHEMES = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PATTERN_LABEL = re.compile(r"^[-a-z0-9*]+$")
_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/-]*$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class UrlRefused(ValueError):
    """A URL (or pattern) that is not accepted; `reason` says why, in words."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str  # http | https
    host: str  # lowercase DNS name, canonical IPv4, or IPv6 in compressed form (no brackets)
    port: int  # explicit, or the scheme's default
    path: str  # "" or starting with "/", no trailing "/"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def url(self) -> str:
        """The normalised URL, the only form a request is sent to."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        port = "" if SCHEMES[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def _split(text: str) -> tuple[str, str, str, str]:
    """scheme, host, port text, path of a URL or pattern; refuses what may be read two ways."""
    if not text:
        raise UrlRefused(text, "empty")
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        raise UrlRefused(text, "whitespace or control characters")
    if not text.isascii():
        raise UrlRefused(text, "non-ASCII characters (write an IDN in its xn-- form)")
    if "\\" in text:
        raise UrlRefused(text, "a backslash (parsers disagree whether it ends the host)")
    if "%" in text:
        raise UrlRefused(text, "percent escapes (%XX): write the characters themselves")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise UrlRefused(text, "no scheme: it must start with http:// or https://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRefused(text, f"scheme {scheme!r}: only http and https")
    if "#" in rest:
        raise UrlRefused(text, "a fragment (#...)")
    if "?" in rest:
        raise UrlRefused(text, "a query (?...)")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise UrlRefused(text, "userinfo (user@ or user:password@ before the host)")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise UrlRefused(text, "an IPv6 literal without its closing ']'")
        host, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise UrlRefused(text, "characters after the IPv6 literal")
        port = after[1:] if after else None
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    if port is not None and port == "":
        raise UrlRefused(text, "an empty port after ':'")
    return scheme, host.lower(), port or "", _clean_path(text, path)


def _clean_path(text: str, path: str) -> str:
    if not _PATH.match(path):
        raise UrlRefused(text, "characters a path may not hold unescaped")
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        raise UrlRefused(text, "'.' or '..' path segments")
    if "" in segments[:-1]:
        raise UrlRefused(text, "an empty path segment ('//')")
    return path.rstrip("/")


def _host(text: str, host: str, pattern: bool) -> str:
    """The host, normalised: an IPv6 literal compressed (no brackets), else checked labels."""
    if host.startswith("["):
        literal = host[1:-1]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise UrlRefused(
                text, f"{host} is not an IPv6 address (zone ids are refused)"
            ) from None
        return address.compressed
    if not host:
        raise UrlRefused(text, "no host")
    if host.endswith("."):
        raise UrlRefused(text, "a host with a trailing dot")
    labels = host.split(".")
    if any(not label for label in labels):
        raise UrlRefused(text, "an empty host label ('..')")
    if len(host) > 253:
        raise UrlRefused(text, "a host longer than 253 characters")
    if _NUMERIC_LABEL.match(labels[-1]):
        # A DNS name never ends in a numeric label: this is an IPv4 address, and only its
        # canonical form is accepted (inet_aton would read 0x7f.1 or 2130706433 as 127.0.0.1).
        if pattern and "*" in host:
            return host
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = ""
        if canonical != host:
            raise UrlRefused(text, f"{host} is not an IPv4 address in dotted decimal form")
        return host
    check = _PATTERN_LABEL if pattern else _LABEL
    for label in labels:
        if len(label) > 63 or not check.match(label):
            raise UrlRefused(text, f"host label {label!r} is not a DNS label")
    return host


def _port(text: str, port: str, scheme: str) -> int:
    if not port:
        return SCHEMES[scheme]
    if not _PORT.match(port) or not 0 < int(port) < 65536:
        raise UrlRefused(text, f"port {port!r} is not a number from 1 to 65535")
    return int(port)


def parse_url(text: str) -> ParsedUrl:
    """A URL from a spec, parsed and normalised; UrlRefused (with the reason) otherwise."""
    scheme, host, port, path = _split(text)
    return ParsedUrl(scheme, _host(text, host, False), _port(text, port, scheme), path)


def _label_regex(label: str) -> str:
    return "[-a-z0-9]*".join(re.escape(part) for part in label.split("*"))


def host_pattern(pattern: str) -> re.Pattern[str]:
    """A host pattern as a regex: label by label, `*` within one label only (never a `.`)."""
    return re.compile(r"\A" + r"\.".join(_label_regex(p) for p in pattern.split(".")) + r"\Z")


@dataclass(frozen=True)
class UrlPattern:
    text: str
    scheme: str
    host: str  # labels with `*` globs, or a compressed IPv6 address
    port: int | None  # None: any port
    path: str  # "": any path

    def matches(self, url: str | ParsedUrl) -> bool:
        """Whether a URL is allowed by this pattern (an unparseable URL never is)."""
        if isinstance(url, str):
            try:
                url = parse_url(url)
            except UrlRefused:
                return False
        if url.scheme != self.scheme or (self.port is not None and url.port != self.port):
            return False
        if ":" in self.host or url.is_ipv6:
            host_ok = url.host == self.host
        else:
            host_ok = bool(host_pattern(self.host).match(url.host))
        under = not self.path or url.path == self.path or url.path.startswith(self.path + "/")
        return host_ok and under


def parse_pattern(text: str) -> UrlPattern:
    """A policy pattern (`http://*.monitoring.svc:9090`); UrlRefused if it is not one."""
    text = text.strip()
    scheme, host, port, path = _split(text)
    if "*" in path:
        raise UrlRefused(text, "a '*' in the path (only host labels and the port take globs)")
    if "*" in host and host.startswith("["):
        raise UrlRefused(text, "a '*' in an IPv6 literal")
    return UrlPattern(
        text,
        scheme,
        _host(text, host, True),
        None if port == "*" else _port(text, port, scheme),
        path,
    )


def parse_patterns(texts: str | tuple[str, ...] | list[str]) -> tuple[UrlPattern, ...]:
    """Comma-separated (or listed) patterns; the first bad one raises UrlRefused."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    return tuple(parse_pattern(t) for t in (i.strip() for i in items) if t)


def allowed(patterns: tuple[UrlPattern, ...], url: str) -> tuple[ParsedUrl | None, str]:
    """(the parsed URL, "") if a pattern admits it, else (None, why not)."""
    try:
        parsed = parse_url(url)
    except UrlRefused as exc:
        return None, exc.reason
    if any(p.matches(parsed) for p in patterns):
        return parsed, ""
    return None, f"no allowed pattern matches {parsed.url}"
