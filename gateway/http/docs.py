"""``GET /docs/errors``: the error codes page, rendered from the packaged docs/errors.md.

Every error body links to ``<docs base>/errors#<code>``; by default that base is this listener's own
``/docs``, so the link works offline and from an installed wheel. The page is Markdown of a small,
known shape (headings, paragraphs, one table, inline code and links), so a few lines render it;
each table row whose first cell is a code gets ``id="<code>"``, the fragment the links name.
"""

from __future__ import annotations

import functools
import html
import re
from importlib import resources

from aiohttp import web

_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gateway: error codes</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .5em;vertical-align:top}}
tr:target{{background:#ffc}}code{{background:#f3f3f3}}</style></head>
<body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escape, then code spans and links; a link to another docs page (relative) stays plain text."""
    out = html.escape(text, quote=True)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)

    def link(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        return f'<a href="{target}">{label}</a>' if target.startswith(("https://", "http://")) else label

    return _LINK.sub(link, out)


def _row(line: str, cell: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    anchor = _CODE.fullmatch(cells[0]) if cell == "td" else None
    row_id = f' id="{html.escape(anchor.group(1), quote=True)}"' if anchor else ""
    return f"<tr{row_id}>" + "".join(f"<{cell}>{_inline(c)}</{cell}>" for c in cells) + "</tr>"


def render(markdown: str) -> str:
    """The page as HTML: blank lines separate blocks; a block is a heading, a table or a paragraph."""
    blocks = [b.splitlines() for b in re.split(r"\n\s*\n", markdown.strip())]
    parts = []
    for lines in blocks:
        first = lines[0]
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            parts.append(f"<h{level}>{_inline(first.lstrip('#').strip())}</h{level}>")
        elif first.startswith("|") and len(lines) > 1:
            head, rows = _row(first, "th"), [_row(line, "td") for line in lines[2:]]
            parts.append("<table><thead>" + head + "</thead><tbody>" + "".join(rows) + "</tbody></table>")
        else:
            parts.append("<p>" + _inline(" ".join(line.strip() for line in lines)) + "</p>")
    return _PAGE.format(body="\n".join(parts))


@functools.cache
def errors_page() -> str:
    return render((resources.files("gateway") / "docs" / "errors.md").read_text(encoding="utf-8"))


async def errors_view(_request: web.Request) -> web.Response:
    return web.Response(text=errors_page(), content_type="text/html")


def add_docs_routes(app: web.Application) -> None:
    """No token needed: it is documentation, the same for everyone."""
    app.router.add_get("/docs/errors", errors_view, name="other.docs")
