"""HTML building blocks of the report page: one self-contained ``index.html``.

Only the standard library: escaping, a small Markdown subset (the ``#`` headings, ``-`` lists,
paragraphs and pipe tables that :mod:`pipeline.tables` and :mod:`pipeline.report.timing` write),
images embedded as base64 ``data:`` URIs (or linked relative to the page), and the page shell.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

DASH = "–"
CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
.banner { padding: 0.8em 1em; border-radius: 6px; font-size: 1.05em; margin: 1em 0; }
.synthetic { background: #fff3cd; border: 1px solid #e0b000; }
.a2d { background: #d9f2e0; border: 1px solid #2e9e50; }
.unknown { background: #eee; border: 1px solid #999; }
.notrun { color: #777; font-style: italic; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
details pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
code { font-size: 0.9em; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def not_run(what: str) -> str:
    """The short note a section shows when its input was not produced."""
    return f'<p class="notrun">Not run: {esc(what)}</p>'


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _table(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head, body = cells(lines[0]), [cells(x) for x in lines[2:]]
    out = ['<div class="scroll"><table>',
           "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for row in body:
        out.append("<tr>" + "".join(
            f'<td class="num">{esc(c)}</td>' if _is_number(c) or c == DASH else f"<td>{esc(c)}</td>"
            for c in row) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def markdown_to_html(text: str, heading_offset: int = 2) -> str:
    """The Markdown subset of our table files: headings (shifted by ``heading_offset``), pipe
    tables (header, separator, rows), ``-`` lists and paragraphs. Everything is escaped."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + heading_offset)
            out.append(f"<h{level}>{esc(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block) if len(block) >= 2 else f"<p>{esc(block[0])}</p>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{esc(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{esc(' '.join(para))}</p>")
    return "\n".join(out)


def image(path: str | Path, page_dir: str | Path, caption: str = "", embed: bool = True) -> str:
    """A ``<figure>`` with the PNG embedded as base64 (``embed``) or linked relative to the page.

    The file name is kept in ``data-src`` either way, so a reader (or a test) can tell which
    figure is which.
    """
    path = Path(path)
    rel = os.path.relpath(path, page_dir)
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = rel
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return (f'<figure><img src="{src}" data-src="{esc(rel)}" alt="{esc(caption or rel)}">'
            f"{cap}</figure>")


def table(header: list[str], rows: list[list[object]]) -> str:
    """A plain HTML table; numbers right-aligned."""
    out = ['<div class="scroll"><table>',
           "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{esc(c)}</td>' if _is_number(str(c)) or c == DASH
            else f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def details(summary: str, text: str) -> str:
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def page(title: str, banner: tuple[str, str], intro: str,
         sections: list[tuple[str, str]]) -> str:
    """The whole page: ``banner`` = (css class, HTML), ``sections`` = [(heading, HTML)]."""
    toc = "".join(f'<li><a href="#s{i}">{esc(h)}</a></li>' for i, (h, _) in enumerate(sections))
    body = "\n".join(f'<h2 id="s{i}">{esc(h)}</h2>\n{content}'
                     for i, (h, content) in enumerate(sections))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{esc(title)}</h1>\n<div class=\"banner {banner[0]}\">{banner[1]}</div>\n"
            f"{intro}\n<ul>{toc}</ul>\n{body}\n</body></html>\n")
