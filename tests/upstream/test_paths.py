"""The safe join never lets a path leave the base URL, however it is encoded."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidPath
from gateway.upstream.paths import join, normalize_path

BASE = "https://api.example.com:8443/base/v2"
PIECES = [
    "a", "b", "..", ".", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%252e", "%252e%252e", "%25252e",
    "/", "//", "%2f", "%2F", "%252f", "\\", "%5c", "%5C", "@", ":", "evil.com", "%40", "%3a", "%00", "%0a",
    "%", "%zz", "?", "#", "%3f", "%23", "~", ";", "=", "%20", "é", "%c3%a9", "%ff",
]


def _as_upstream_sees_it(path: str) -> str:
    """A worst-case upstream: decodes repeatedly, treats backslashes as slashes, then resolves dots."""
    for _ in range(6):
        path = unquote(path)
    return posixpath.normpath(path.replace("\\", "/"))


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_no_generated_path_escapes_the_base(raw: str) -> None:
    """Every generated path is refused or lands below the base path on the base origin."""
    try:
        url = join(BASE, raw, "q=1")
    except InvalidPath:
        return
    assert (url.scheme, url.host, url.port, url.user, url.password) == ("https", "api.example.com", 8443, None, None)
    assert url.raw_path.startswith("/base/v2/")
    assert _as_upstream_sees_it(url.raw_path).startswith("/base/v2")
    assert url.raw_query_string == "q=1"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
def test_arbitrary_text_is_refused_or_kept_below_the_base(raw: str) -> None:
    """Arbitrary Unicode, control characters included, is refused or kept below the base."""
    try:
        url = join(BASE, raw)
    except InvalidPath:
        return
    assert url.host == "api.example.com" and url.raw_path.startswith("/base/v2/")


@pytest.mark.parametrize(
    ("raw", "sent"),
    [("", ""), ("a/b", "a/b"), ("a/b/", "a/b/"), ("a/./b", "a/b"), ("a/b/../c", "a/c"), ("a/..", ""),
     ("a%2Fb", "a%2Fb"), ("x%40y:z", "x%40y:z")],
)
def test_harmless_paths_are_kept_as_sent(raw: str, sent: str) -> None:
    """Paths below the base keep their encoding; inner dot segments are resolved."""
    assert normalize_path(raw) == sent


def test_query_auth_replaces_a_client_parameter_of_the_same_name() -> None:
    """The credential's query parameter wins over one the client sent."""
    url = join(BASE, "x", "api_key=mine&b=2", {"api_key": "secret"})
    assert url.raw_query_string == "b=2&api_key=secret"
