"""A report as a list of blocks, rendered to Markdown or to one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold **bold**


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's directory
    alt: str


@dataclass(frozen=True)
class Rule:
    pass


Block = Heading | Paragraph | Bullets | Table | Code | Image | Rule

# Outcome marks are words, never emoji: a host without an emoji font (headless Chromium on a CI
# runner) draws ✅ ❔ ❌ as the same empty box, and an INCONCLUSIVE row then looks like a passed one.
# Blocks hold ``mark(kind)``; Markdown shows ``[WORD]``, HTML a coloured badge holding the word.
MARKS = {"passed": "PASSED", "failed": "FAILED", "inconclusive": "INCONCLUSIVE", "error": "ERROR",
         "warning": "WARNING", "none": "NO VERDICT"}
_MARK = re.compile(r"\[\[(" + "|".join(MARKS) + r")\]\]")


def mark(kind: str) -> str:
    """A mark for an outcome (``passed``, ``failed``, ``inconclusive``), a test error, a warning or none."""
    if kind not in MARKS:
        raise ValueError(f"mark {kind!r}: use one of {', '.join(MARKS)}")
    return f"[[{kind}]]"


def _markdown_marks(text: str) -> str:
    return _MARK.sub(lambda m: f"[{MARKS[m.group(1)]}]", text)


def _cell(text: str) -> str:
    return _markdown_marks(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_markdown_marks(block.text)}")
        elif isinstance(block, Paragraph):
            out.append(_markdown_marks(block.text))
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {_markdown_marks(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(map(_cell, block.headers)) + " |",
                     "|" + "|".join("---" for _ in block.headers) + "|"]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Code):
            out.append(f"```{block.language}\n{block.text.rstrip()}\n```")
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.path.as_posix()})")
        else:
            out.append("---")
    return "\n\n".join(out) + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.5}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}pre{background:#f6f8fa;padding:1em;overflow-x:auto}img{max-width:100%}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ddd;margin-top:2em}
.mark{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.85em;font-weight:bold;color:#fff;
white-space:nowrap}.mark-passed{background:#1a7f37}.mark-failed,.mark-error{background:#cf222e}
.mark-inconclusive{background:#9a6700}.mark-warning{background:#bc4c00}.mark-none{background:#6e7781}
"""


def _inline(text: str) -> str:
    marked = _MARK.sub(lambda m: f'<span class="mark mark-{m.group(1)}">{MARKS[m.group(1)]}</span>', html.escape(text))
    return _BOLD.sub(r"<strong>\1</strong>", marked)


def to_html(blocks: Sequence[Block], title: str, base: Path) -> str:
    """One file that opens from disk: images are inlined as data URIs."""
    out = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Code):
            out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif isinstance(block, Image):
            data = base64.b64encode((base / block.path).read_bytes()).decode("ascii")
            out.append(f"<p><img alt=\"{html.escape(block.alt)}\" src=\"data:image/png;base64,{data}\"></p>")
        else:
            out.append("<hr>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
