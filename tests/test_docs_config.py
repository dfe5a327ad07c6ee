"""The TOML examples in docs/*.md load as they are: config tables through the config loader, catalog
entries (marked ``<!-- snippet: catalog -->``) through the catalog parser. A reader may paste any of them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gateway import catalog
from gateway.config import load_config

DOCS = Path(__file__).resolve().parents[1] / "docs"
_TOML = re.compile(r"^( *)```toml\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_CATALOG = "<!-- snippet: catalog -->"
ENVIRON = {"GATEWAY_ENCRYPTION_KEYS": "", "STRIPE_SECRET_KEY": "sk_test_docs"}


def examples() -> list[tuple[str, bool, str]]:
    """(where, is a catalog entry, TOML text) for every ``toml`` block of the docs."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text()
        for match in _TOML.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.name}:{line}", before == _CATALOG, textwrap.dedent(match.group(2))))
    return found


def test_the_docs_have_toml_examples_of_both_kinds() -> None:
    """The extraction finds the blocks (an indented one too) and the catalog mark."""
    kinds = [is_entry for _, is_entry, _ in examples()]
    assert kinds.count(True) >= 1 and kinds.count(False) >= 3


@pytest.mark.parametrize(("where", "is_entry", "text"), examples(), ids=[w for w, _, _ in examples()])
def test_a_docs_toml_example_loads_as_written(where: str, is_entry: bool, text: str, tmp_path: Path) -> None:
    """Each block is complete: nothing elided, every key spelled as the loader reads it."""
    if is_entry:
        entry = catalog.parse("acme", text, origin=where)
        assert entry.definition.display_name
        return
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    load_config(path, environ=ENVIRON)  # unknown keys are refused too: a typo in the docs fails here
