"""``report.html``: one static page per run (no server, no network), pictures embedded.

It shows the run's results table against the baselines, its training curves and t-SNE map (the PNGs
the run already wrote), and its config, so a person reads a run at a glance from one file.
"""

from __future__ import annotations

import base64
import html
import os

PICTURES = (("curves.png", "Training curves"), ("tsne.png", "Test embeddings (t-SNE)"),
            ("views.png", "Augmented views"))
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}"
          "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}")


def _markdown_table(markdown: str) -> str:
  """A Markdown pipe table (``jaxcl.evaluate.format_table``'s) as an HTML table."""
  rows = [line.strip().strip("|").split("|") for line in markdown.strip().splitlines()
          if line.strip().startswith("|")]
  rows = [r for r in rows if not all(set(c.strip()) <= set("-:") for c in r)]
  if not rows:
    return ""
  head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
  body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                 for r in rows[1:])
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_page(path: str, *, title: str, facts: dict[str, object] | None = None,
               tables: dict[str, str] | None = None, pictures=(), text: dict[str, str] | None = None
               ) -> str:
  """Writes one static HTML page to ``path``; returns it.

  Args:
    path: the output file.
    title: the page title.
    facts: ``name: value`` lines shown first.
    tables: ``{heading: Markdown pipe table}``.
    pictures: ``(PNG path, caption)`` pairs, embedded (missing files are left out).
    text: ``{heading: preformatted text}``, shown last.
  """
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
  if facts:
    parts.append("<ul>" + "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                                  for k, v in facts.items()) + "</ul>")
  for heading, table in (tables or {}).items():
    parts.append(f"<h2>{html.escape(heading)}</h2>" + (_markdown_table(table) or "<p>None yet.</p>"))
  for png, caption in pictures:
    if os.path.exists(png):
      with open(png, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
      parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(os.path.basename(png))}' "
                   f"src='data:image/png;base64,{data}'>")
  for heading, body in (text or {}).items():
    parts.append(f"<h2>{html.escape(heading)}</h2><pre>{html.escape(body)}</pre>")
  parts.append("</body></html>")
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(parts))
  return path


def write_report(workdir: str, *, title: str, table: str, config_text: str,
                 facts: dict[str, object] | None = None) -> str:
  """Writes ``workdir/report.html`` (results, the run's PNGs in ``PICTURES``, config); returns it."""
  return write_page(os.path.join(workdir, "report.html"), title=title, facts=facts,
                    tables={"Results": table},
                    pictures=[(os.path.join(workdir, name), caption) for name, caption in PICTURES],
                    text={"Config": config_text})
