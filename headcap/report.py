"""A small self-contained HTML report: sections of text, tables, metrics and images.

Images are referenced by relative path (they sit beside the report), so the folder can be
zipped or served as is.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from headcap.core.fileio import atomic_write_text

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.4em;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd} .warn{color:#a60} .ok{color:#080} .bad{color:#b00}
code{background:#f5f5f5;padding:0 3px}
"""


@dataclass
class Report:
    title: str
    blocks: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.blocks.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list], css_classes: list[str | None] | None = None) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cls = f' class="{css_classes[i]}"' if css_classes and css_classes[i] else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
        self.blocks.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def image(self, path, caption: str = "", relative_to=None, width: int | None = None, inline: bool = False) -> None:
        """An image by relative path, or embedded in the page (inline=True: a self-contained page)."""
        src = _data_uri(path) if inline else os.path.relpath(path, relative_to) if relative_to else str(path)
        style = f' style="width:{width}px"' if width else ""
        self.blocks.append(f'<figure><img src="{html.escape(src)}"{style}><figcaption>{html.escape(caption)}</figcaption></figure>')

    def video(self, path, caption: str = "", relative_to=None, width: int | None = None, inline: bool = False) -> None:
        """An mp4 (H.264) video, looping, by relative path or embedded."""
        src = _data_uri(path) if inline else os.path.relpath(path, relative_to) if relative_to else str(path)
        style = f' style="width:{width}px"' if width else ""
        self.blocks.append(f'<figure><video src="{html.escape(src)}"{style} controls loop muted playsinline '
                           f'preload="auto"></video><figcaption>{html.escape(caption)}</figcaption></figure>')

    def raw(self, markup: str) -> None:
        """Markup the caller built and escaped itself."""
        self.blocks.append(markup)

    def write(self, path) -> Path:
        path = Path(path)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                f"<p>written {stamp} by headcap</p>{''.join(self.blocks)}</body></html>\n")
        atomic_write_text(path, page)
        return path


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".mp4": "video/mp4", ".webm": "video/webm"}


def _data_uri(path) -> str:
    import base64

    path = Path(path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"report: cannot embed {path} (unknown type {path.suffix!r})")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
