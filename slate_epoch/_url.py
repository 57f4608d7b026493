"""Store URLs, parsed in one place: ``scheme://location/path?option=value``.

Every backend's ``from_url`` goes through ``parse_store_url``, so every URL gets the same rules:
credentials never come from a URL (user info, or an option whose name looks like a secret, is
refused and never echoed); unknown, repeated or mistyped options are ``ValueError``s that name
the option, never its value; fragments are refused. The stores named by a bucket or a container
check that name with ``named_location``, and join the URL's options to the keyword arguments of
``from_url`` with ``merge_options``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["StoreURL", "merge_options", "named_location", "parse_store_url", "split_scheme"]

_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "signature", "sas", "sig")


class StoreURL(NamedTuple):
    scheme: str  # lowercase
    location: str  # what follows ``//`` up to the path: a bucket, a container, a host
    path: str  # unquoted, without leading or trailing ``/``: a key prefix or a folder
    options: dict[str, Any]  # the query's options, converted


def split_scheme(url: object) -> str:
    """The URL's scheme, lowercase (``TypeError`` if ``url`` is not a str)."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    return urlsplit(url).scheme.lower()


def parse_store_url(
    url: str,
    *,
    options: Mapping[str, Callable[[str], Any]] | None = None,
    credentials_from: str = "the environment",
) -> StoreURL:
    """Split ``url`` and convert its query by ``options`` (name -> converter, e.g. ``float``).

    ``credentials_from`` completes the refusal of a URL that carries credentials ("...
    credentials come from {credentials_from}").
    """
    scheme = split_scheme(url)
    parts = urlsplit(url)
    refused = f"{scheme}:// URL carries credentials"
    where = f"credentials come from {credentials_from}"
    if "@" in parts.netloc:  # never echo it: it holds a secret
        raise ValueError(f"{refused} (user info before '@'); refusing it: {where}")
    known = dict(options or {})
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"malformed query string in {scheme}:// URL") from None
    names = [name for name, _ in pairs]
    secrets = sorted({n for n in names if any(w in n.lower() for w in _SECRET_WORDS)})
    if secrets:
        raise ValueError(f"{refused} ({', '.join(secrets)}); refusing it: {where}")
    if parts.fragment:
        raise ValueError(f"{scheme}:// URL takes no fragment")
    unknown = sorted(set(names) - set(known))
    if unknown:
        takes = f"known: {', '.join(sorted(known))}" if known else "it takes none"
        raise ValueError(f"unknown option(s) in {scheme}:// URL: {', '.join(unknown)}; {takes}")
    converted: dict[str, Any] = {}
    for name, raw in pairs:
        if name in converted:
            raise ValueError(f"option {name} given twice in {scheme}:// URL")
        convert = known[name]
        try:
            converted[name] = convert(raw)
        except ValueError:
            kind = getattr(convert, "__name__", "valid")
            raise ValueError(
                f"option {name} in {scheme}:// URL must be {kind}, got {raw!r}"
            ) from None
    return StoreURL(scheme, parts.netloc, unquote(parts.path).strip("/"), converted)


def named_location(parsed: StoreURL, kind: str, *, no_port: str) -> str:
    """The URL's location as the name of a ``kind`` (a bucket, a container): there, and without
    a port (``no_port`` ends that refusal, saying where the server is named instead)."""
    scheme = parsed.scheme
    if not parsed.location:
        raise ValueError(f"{scheme}:// URL names no {kind}: expected {scheme}://{kind}[/prefix]")
    if ":" in parsed.location:
        raise ValueError(f"{scheme}:// URL takes no port; {no_port}")
    return parsed.location


def merge_options(parsed: StoreURL, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The URL's options and ``from_url``'s keyword arguments together; an option given in both
    is a ``ValueError``."""
    both = sorted(set(parsed.options) & set(arguments))
    if both:
        raise ValueError(f"option(s) given both in the URL and as arguments: {both}")
    return {**parsed.options, **arguments}
