"""Pure checks on URL text, shared by the proxy's path join and the models' ``base_url`` validator.

Percent-decoding and Unicode compatibility folding are where path checks go wrong: what one server
sees as a harmless name, another decodes (``%2e%2e``) or NFKC-normalises (fullwidth dots ``%ef%bc%8e``) into a
dot segment. These helpers answer the question once for both callers; no I/O, no state.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote, urlsplit

from gateway.errors import InvalidPath

MAX_DECODES = 4
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Not compatibility characters (NFKC keeps them), yet "best-fit" code-page mappings (Windows, some
# proxies) turn them into '/' or '\\': the division slash of the adversarial run among them.
_LOOKALIKES = str.maketrans({"\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u2216": "\\", "\u29f9": "\\"})


def fully_decode(text: str) -> str:
    """Percent-decode until nothing changes; refuse encodings nested deeper than any client needs."""
    for _ in range(MAX_DECODES):
        decoded = unquote(text, errors="strict")
        if decoded == text:
            return text
        text = decoded
    raise InvalidPath("path: percent-encoding is nested too deeply", field="path")


def folds_into_separators(text: str) -> bool:
    """Whether NFKC (or a best-fit look-alike) makes ``..``, ``/`` or ``\\`` appear that ``text`` lacked."""
    if text.isascii():
        return False  # NFKC leaves ASCII alone
    folded = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    return any(folded.count(token) > text.count(token) for token in ("..", "/", "\\"))


def check_base_path(url: str) -> None:
    """A credential's ``base_url`` path: no dot segments, however encoded, and nothing NFKC would fold.

    The proxy's checks keep a client below the base path; a base that itself climbs (``/v1/../..``)
    would put the whole upstream host in reach.
    """
    path = urlsplit(url).path
    try:
        decoded = fully_decode(path)
    except (InvalidPath, UnicodeDecodeError):
        raise ValueError("the path's percent-encoding must decode to UTF-8, at most 4 levels deep") from None
    if CONTROL.search(decoded) or "\\" in decoded or folds_into_separators(decoded):
        raise ValueError("the path must not hold control characters, backslashes or look-alikes of '..' and '/'")
    for segment in decoded.split("/"):
        if segment.split(";", 1)[0] in (".", ".."):
            raise ValueError("the path must not hold '.' or '..' segments")
