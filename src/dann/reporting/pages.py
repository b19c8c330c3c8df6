"""A tiny document model rendered twice: Markdown (figures as PNG files beside it) and one self-contained HTML page
(figures embedded as base64 PNG). Paragraphs may use ``**bold**`` and ```code```; nothing else is interpreted."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # file name stem, e.g. "curves"
    png: bytes
    caption: str


@dataclass
class Code:
    text: str


Block = str | Table | Figure | Code


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def to_markdown(title: str, sections: list[Section], figure_dir: str) -> str:
    """Markdown; each figure is referenced as ``{figure_dir}/{name}.png`` (the caller writes those files)."""
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(block.header) + " |")
                out.append("|" + " --- |" * len(block.header))
                out += ["| " + " | ".join(row) + " |" for row in block.rows]
            elif isinstance(block, Figure):
                out.append(f"![{block.caption}]({figure_dir}/{block.name}.png)")
                out += ["", f"*{block.caption}*"]
            elif isinstance(block, Code):
                out += ["```", block.text.rstrip(), "```"]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


def inline_html(text: str) -> str:
    """Escape ``text`` and turn ``**bold**`` and ```code``` into tags."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 24px auto;
       padding: 0 16px; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 28px; border-bottom: 1px solid #eaeef2; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; }
th { background: #f6f8fa; }
code, pre { background: #f6f8fa; border-radius: 4px; font-size: 0.88em; }
code { padding: 1px 4px; }
pre { padding: 10px; overflow-x: auto; }
img { max-width: 100%; }
figcaption { color: #57606a; font-size: 0.9em; }
"""


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode()
        alt, caption = html.escape(block.caption.replace("`", "")), inline_html(block.caption)
        img = f'<img src="data:image/png;base64,{data}" alt="{alt}">'
        return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    return f"<p>{inline_html(block)}</p>"


def to_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML page: inline CSS, figures as data URIs, no scripts, no external requests."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def figures(sections: list[Section]) -> list[Figure]:
    return [block for section in sections for block in section.blocks if isinstance(block, Figure)]
