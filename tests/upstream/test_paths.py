"""The safe join never lets a path leave the base URL, however it is encoded."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Any, Literal
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.domain.models import CredentialIn
from gateway.errors import InvalidPath
from gateway.upstream.paths import Base, join, normalize_path, resolve_segments

NO_SURROGATES: tuple[Literal["Cs"], ...] = ("Cs",)  # lone surrogates cannot be UTF-8 encoded

BASE = "https://api.example.com:8443/base/v2"
PIECES = [
    "a",
    "b",
    "..",
    ".",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%252e",
    "%252e%252e",
    "%25252e",
    "/",
    "//",
    "%2f",
    "%2F",
    "%252f",
    "\\",
    "%5c",
    "%5C",
    "@",
    ":",
    "evil.com",
    "%40",
    "%3a",
    "%00",
    "%0a",
    "%",
    "%zz",
    "?",
    "#",
    "%3f",
    "%23",
    "~",
    ";",
    "=",
    "%20",
    "é",
    "%c3%a9",
    "%ff",
    # ';' parameters (Tomcat/Jetty strip them, then resolve dots) and what NFKC folds into '.', '/', '\\'
    "..;",
    ".;x",
    "%3b",
    "%3B",
    "%2e%2e%3b",
    "%ef%bc%8e",
    "\uff0e",
    "%ef%b9%92",
    "\u2025",
    "%e2%80%a5",
    "%e2%88%95",
    "\u2215",
    "%e2%81%84",
    "%ef%bc%8f",
    "\uff0f",
    "%ef%bc%bc",
    "\uff3c",
    "%e2%88%96",
    # IIS's %uXXXX escapes, plain and percent-encoded
    "%u002e",
    "%U002E",
    "%uff0e",
    "%u002f",
    "%u005c",
    "%25u002e",
]


_IIS_ESCAPES = re.compile(r"%u([0-9a-f]{4})", re.IGNORECASE)  # IIS decodes %u002e as "."
_BEST_FIT = str.maketrans({"\u2215": "/", "\u2044": "/", "\u2216": "\\"})  # Windows code-page look-alikes


def _as_upstream_sees_it(path: str) -> str:
    """A worst-case upstream: decodes repeatedly, folds Unicode compatibility forms (NFKC) and best-fit
    look-alikes, treats backslashes as slashes, drops ';' parameters from each segment, resolves dots."""
    for _ in range(6):
        path = _IIS_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), unquote(path))
    path = unicodedata.normalize("NFKC", path).translate(_BEST_FIT).replace("\\", "/")
    return posixpath.normpath("/".join(segment.split(";", 1)[0] for segment in path.split("/")))


@settings(max_examples=3000, deadline=None)
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


def _outcome(normalize: Any, raw: str) -> str | None:
    try:
        return str(normalize(raw))
    except InvalidPath:
        return None


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([*PIECES, "x.y", "-", "!$&'()*+,", "A9_"]), max_size=12).map("".join))
def test_the_one_pass_for_plain_paths_agrees_with_every_rule(raw: str) -> None:
    """``normalize_path`` answers plain paths without the segment walk: same result, same refusals."""
    assert _outcome(normalize_path, raw) == _outcome(resolve_segments, raw)


def test_one_base_joins_many_paths_like_a_fresh_join() -> None:
    """A ``Base`` kept across calls (one per credential object) joins each path as a one-off join does."""
    base = Base("https://api.example.com:8443/base/v2/")
    for n, raw in enumerate(["a", "a/b/../c", "x%40y:z", "a;b/c", "", "caf%c3%a9"]):
        url = base.join(raw, f"r={n}", {"key": "v"})
        assert url == join("https://api.example.com:8443/base/v2/", raw, f"r={n}", {"key": "v"})
        assert str(url) == f"https://api.example.com:8443/base/v2/{normalize_path(raw)}?r={n}&key=v"
    with pytest.raises(InvalidPath):
        base.join("a/../../x")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=NO_SURROGATES), max_size=20))
def test_arbitrary_text_is_refused_or_kept_below_the_base(raw: str) -> None:
    """Arbitrary Unicode, control characters included, is refused or kept below the base."""
    try:
        url = join(BASE, raw)
    except InvalidPath:
        return
    assert url.host == "api.example.com" and url.raw_path.startswith("/base/v2/")


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("", ""),
        ("a/b", "a/b"),
        ("a/b/", "a/b/"),
        ("a/./b", "a/b"),
        ("a/b/../c", "a/c"),
        ("a/..", ""),
        ("a%2Fb", "a%2Fb"),
        ("x%40y:z", "x%40y:z"),
    ],
)
def test_harmless_paths_are_kept_as_sent(raw: str, sent: str) -> None:
    """Paths below the base keep their encoding; inner dot segments are resolved."""
    assert normalize_path(raw) == sent


def test_query_auth_replaces_a_client_parameter_of_the_same_name() -> None:
    """The credential's query parameter wins over one the client sent."""
    url = join(BASE, "x", "api_key=mine&b=2", {"api_key": "secret"})
    assert url.raw_query_string == "b=2&api_key=secret"


@pytest.mark.parametrize(
    "raw",
    [
        "..;/secret",
        "a/..;/..;/secret",
        "a/.;x/../../b",
        "a/%2e%2e%3b/b",
        "%ef%bc%8e%ef%bc%8e/secret",
        "a/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/x",
        ".%ef%bc%8e/x",
        "a%e2%88%95..%e2%88%95..%e2%88%95x",
        "%e2%80%a5/x",
        "a%ef%bc%bcb",
        ";%2f%2e%2e%3b",
        "a%2f..;x%2fb",
        "%u002e%u002e/x",
        "%uff0e%uff0e/x",
        "a%u002fb",
        "%25u002e%25u002e/x",
    ],
)
def test_parameter_and_compatibility_forms_of_dot_segments_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(raw)


@pytest.mark.parametrize("raw", ["a;b/c", "matrix;p=1/x", "caf%c3%a9/%ef%bc%a1", "a.b..c"])
def test_parameters_and_unicode_that_fold_to_nothing_dangerous_pass(raw: str) -> None:
    assert normalize_path(raw) == raw


CREDENTIAL: dict[str, Any] = {"provider": "rest", "auth": {"type": "bearer", "token": "t0k3n"}}


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.example.com/v1/../..",
        "https://api.example.com/a/%2e%2e/b",
        "https://api.example.com/./v1",
        "https://api.example.com/a/..;/b",
        "https://api.example.com/%ef%bc%8e%ef%bc%8e/x",
        "https://api.example.com/a%e2%88%95b",
        "https://user@api.example.com/",
        "https://@api.example.com/",
        "https://u:p@api.example.com/",
        "https://api.example.com/a%5cb",
    ],
)
def test_base_urls_that_climb_or_carry_userinfo_are_refused(base_url: str) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        CredentialIn.model_validate({**CREDENTIAL, "base_url": base_url})


@pytest.mark.parametrize(
    "base_url", ["https://api.example.com", "https://api.example.com/v1/", "http://h:8443/a.b/c..d"]
)
def test_plain_base_urls_pass(base_url: str) -> None:
    assert CredentialIn.model_validate({**CREDENTIAL, "base_url": base_url}).base_url == base_url.rstrip("/")
