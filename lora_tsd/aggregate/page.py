"""The report's HTML pages (a family's page, the whole leaderboard, the reproduction table),
each one self-contained: inline CSS and a little inline JavaScript (no library, nothing
fetched from the network), figures embedded as PNG data URIs.

On a page:
- each table sits in its own scroll box (its header row and first column stay in view), so a
  wide table scrolls sideways inside the box and never widens the page;
- the best value of each column is marked (bold on green), per model: the highest score or
  difference with LoRA, the lowest cost or forgetting (`Table.better` says which way each
  column goes); tied values are all marked, a column whose values are all equal, or with fewer
  than two numbers for a model, has no mark, and a cell without a number (-, n/a, missing,
  diverged) is never a candidate;
- clicking a column's header sorts the rows by it (numbers by value, the best first when the
  column has a direction; cells without a number last; a second click reverses);
- the filters above the tables keep the rows of one model, method or rank, and the sections of
  one protocol, in every table of the page;
- a family page's figures follow the tables they illustrate ("figure" blocks).

`tables.blocks` builds a page's content as (family, tag, content) blocks; `render` writes them;
`dump`/`load` carry a family's blocks from the aggregate rule to the plots rule, which renders
the page once its figures exist."""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

HIGHER, LOWER = "higher", "lower"  # a column's better direction
FILTERS = ("model", "method", "rank")  # columns the filters act on (and protocol: a section's)
NOT_A_NUMBER = "-"
_NUMBER = re.compile(r"\s*([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.])")
_CI = re.compile(r"\s*(\[[+-]?[\d.]+, [+-]?[\d.]+\])")  # a cell's [95% CI]
_P = re.compile(r"\s*(p[<=][\d.]+)")  # a paired cell's p-value

# A family's figures (the plots rule's PNGs): heading on the page, in the order drawn.
FIGURES = {"bars": "Scores per task", "rank": "Score against rank", "pareto": "Score against trainable parameters",
           "loss_curves": "Training losses", "tsd_profile": "Task-specific-direction profile",
           "tsd_overlap": "Stability of the selected directions"}


@dataclass
class Table:
    """A table as shown: column names, cell texts, which way each value column is better
    (column -> 'higher' | 'lower'; others have no best) and the protocol it belongs to."""

    columns: list[str]
    rows: list[list[str]]
    better: dict[str, str] = field(default_factory=dict)
    protocol: str | None = None

    @classmethod
    def of(cls, df: pd.DataFrame) -> "Table":
        """From a blocks table: its cells as text ('-' for a missing value), its direction and
        protocol from df.attrs (tables.blocks sets them)."""
        rows = [[NOT_A_NUMBER if _missing(v) else str(v) for v in row] for row in df.itertuples(index=False)]
        return cls([str(c) for c in df.columns], rows, dict(df.attrs.get("better", {})), df.attrs.get("protocol"))

    def column(self, name: str) -> list[str]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def number(text: str) -> float | None:
    """A cell's value: the number it starts with ('48.33 ± 2.89 [39.2, 57.5] ▲' -> 48.33,
    '+1.20 [...] p=0.031' -> 1.2); None for a cell without one (-, n/a, missing, diverged...)."""
    m = _NUMBER.match(str(text))
    return float(m.group(1)) if m else None


def best_cells(table: Table, group: str = "model") -> set[tuple[int, str]]:
    """(row index, column) of each column's best value within each `group` (a model's rows),
    as the cells show it (two cells that read the same tie: both are marked). A column with
    fewer than two numbers in a group, or with one value throughout, has no best there."""
    groups: dict[str, list[int]] = {}
    keys = table.column(group) if group in table.columns else [""] * len(table.rows)
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = set()
    for name, direction in table.better.items():
        if name not in table.columns:
            continue
        if direction not in (HIGHER, LOWER):
            raise ValueError(f"column {name!r}: direction {direction!r}, not {HIGHER!r} or {LOWER!r}")
        values = [number(v) for v in table.column(name)]
        for rows in groups.values():
            found = {i: values[i] for i in rows if values[i] is not None}
            if len(found) < 2 or len(set(found.values())) == 1:
                continue
            target = (max if direction == HIGHER else min)(found.values())
            out |= {(i, name) for i, v in found.items() if v == target}
    return out


# ---------------------------------------------------------------- carrying blocks between rules

def dump(blocks: list[tuple], title: str) -> dict:
    """A page's blocks as JSON (tables as their cells, directions and protocol)."""
    def content(tag, c):
        if tag != "table":
            return c
        t = c if isinstance(c, Table) else Table.of(c)
        return {"columns": t.columns, "rows": t.rows, "better": t.better, "protocol": t.protocol}
    return {"title": title, "blocks": [[fam, tag, content(tag, c)] for fam, tag, c in blocks]}


def load(path: str | Path) -> tuple[list[tuple], str]:
    """(blocks, title) from a dump written to `path`."""
    data = json.loads(Path(path).read_text())
    return [(fam, tag, Table(**c) if tag == "table" else c) for fam, tag, c in data["blocks"]], data["title"]


# ---------------------------------------------------------------- rendering

def render(blocks: list[tuple], family: str | None, title: str, figures: dict[str, bytes] | None = None,
           captions: dict[str, str] | None = None) -> str:
    """A page: the shared header, then `family`'s blocks (None: every block). A ("figure",
    name) block shows figures[name] (PNG bytes) with captions[name]; without it, nothing."""
    esc = html.escape
    figures, captions = figures or {}, captions or {}
    chosen = [(fam, tag, c) for fam, tag, c in blocks
              if tag != "h1" and (family is None or fam in (None, family))
              and (tag != "figure" or c in figures)]
    chosen = [(fam, tag, c if tag != "table" or isinstance(c, Table) else Table.of(c)) for fam, tag, c in chosen]
    tables = [c for _, tag, c in chosen if tag == "table"]

    head, sections, anchors = [], [], {}
    for fam, tag, c in chosen:
        if tag in ("h2", "h3", "figure"):
            sections.append({"heading": (tag, c), "items": [], "protocol": None,
                             "anchor": _anchor(c if tag != "figure" else f"figure {c}", anchors)})
        elif not sections:
            head.append((tag, c))
        else:
            sections[-1]["items"].append((tag, c))
            if tag == "table" and c.protocol:
                sections[-1]["protocol"] = c.protocol

    body = [f"<h1>{esc(title)}</h1>"]
    if family and not any(fam == family for fam, _, _ in blocks):
        body.append(f"<p>This grid has no {esc(family)} rows.</p>")
    body += _head(head)
    body.append(_guide(bool(figures)))
    body.append(_filters(tables, sections))
    body.append(_contents(sections, family))
    for section in sections:
        tag, c = section["heading"]
        proto = f" data-protocol='{esc(section['protocol'])}'" if section["protocol"] else ""
        out = [f"<section id='{section['anchor']}'{proto}>"]
        if tag == "figure":
            png = base64.b64encode(figures[c]).decode()
            text = FIGURES.get(c, c.replace("_", " "))
            out += [f"<h3>Figure: {esc(text)}</h3>",
                    f"<figure class='fig' data-figure='{esc(c)}'><img alt='{esc(text)}' title='click: full size' "
                    f"src='data:image/png;base64,{png}'>"
                    + (f"<figcaption>{esc(_plain(captions[c]))}</figcaption>" if captions.get(c) else "")
                    + "</figure>"]
        else:
            out.append(f"<{tag}>{esc(c)}</{tag}>")
        for item_tag, item in section["items"]:
            out.append(_table(item) if item_tag == "table" else _block(item_tag, item))
        body.append("".join(out) + "</section>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}"
            f"<script>{SCRIPT}</script></body></html>")


def _head(items) -> list[str]:
    """The page's header blocks: consecutive list items as one list."""
    out, items_open = [], False
    for tag, c in items:
        if tag == "li" and not items_open:
            out.append("<ul class='stamp'>")
            items_open = True
        elif tag != "li" and items_open:
            out.append("</ul>")
            items_open = False
        out.append(_block(tag, c))
    return out + (["</ul>"] if items_open else [])


def _block(tag: str, c: str) -> str:
    return f"<{tag}>{html.escape(c)}</{tag}>"


def _plain(rst: str) -> str:
    """A figure's caption from its report caption (reStructuredText): literals unquoted, one line."""
    return " ".join(rst.replace("``", "").split())


def _anchor(text: str, seen: dict[str, int]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    seen[slug] = seen.get(slug, 0) + 1
    return slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"


def _contents(sections, family) -> str:
    """Links to the sections, labelled without the page's family name."""
    links = []
    for s in sections:
        tag, c = s["heading"]
        anchor = s["anchor"]
        label = f"Figure: {FIGURES.get(c, c)}" if tag == "figure" else _short(c, family)
        links.append(f"<a class='{tag}' href='#{anchor}'>{html.escape(label)}</a>")
    return f"<nav class='toc'><b>On this page:</b> {' '.join(links)}</nav>" if links else ""


def _short(heading: str, family: str | None) -> str:
    if not family:
        return heading
    for pattern in (f" — {family}, ", f"{family} — "):
        heading = heading.replace(pattern, " — " if pattern.startswith(" ") else "")
    return heading.removesuffix(f" — {family}")


def _guide(with_figures: bool) -> str:
    return ("<details class='guide'><summary>How to read this page</summary><ul>"
            "<li><span class='best'>Bold on green</span>: the best value of its column among one model's rows "
            "(scores and differences with LoRA: the highest; costs and forgetting: the lowest; tied values all "
            "marked; no mark where every value is the same, and never on -, n/a, missing or diverged).</li>"
            "<li>▲/▼: the paired comparison with LoRA has a 95% CI above/below 0. A score cell reads mean ± std "
            "over seeds, with the 95% CI [low, high] below it.</li>"
            "<li>Click a column header to sort by it (the best first where the column has a direction; click again "
            "to reverse); the filters keep one model, method, rank or protocol in every table.</li>"
            "<li>Wide tables scroll sideways inside their box; the header and the first column stay in view.</li>"
            + ("<li>Each figure follows the tables it illustrates; click a figure to see it at full size.</li>"
               if with_figures else "")
            + "</ul></details>")


def _filters(tables: list[Table], sections) -> str:
    """A select per filter with the values the page's tables hold (protocol: its sections')."""
    values: dict[str, list[str]] = {}
    for t in tables:
        for name in FILTERS:
            if name in t.columns:
                values.setdefault(name, [])
                values[name] += [_key(name, v) for v in t.column(name)]
    protocols = [s["protocol"] for s in sections if s["protocol"]]
    if protocols:
        values["protocol"] = protocols
    if not values:
        return ""
    out = ["<form class='filters' onsubmit='return false'><b>Show only:</b>"]
    for name in (*FILTERS, "protocol"):
        if name not in values:
            continue
        options = sorted(set(values[name]), key=lambda v: (number(v) is None, number(v) or 0, v))
        out.append(f"<label>{name} <select name='{name}'><option value=''>all</option>"
                   + "".join(f"<option>{html.escape(v)}</option>" for v in options) + "</select></label>")
    out.append("<button type='button' class='reset'>show all</button></form>")
    return "".join(out)


def _key(column: str, text: str) -> str:
    """What a filter matches in a cell: the method without its † (a loss that did not learn)."""
    return text.removesuffix(" †") if column == "method" else text


def _table(t: Table) -> str:
    esc = html.escape
    best = best_cells(t)
    # A column sorts by value when it holds numbers (where a cell shows one): a value column
    # always, others (rank, seed, steps, lr...) when every cell that shows something is a number.
    numeric = {c: c in t.better or (all(number(v) is not None for v in t.column(c) if _shows_number(v)) and
                                    any(number(v) is not None for v in t.column(c))) for c in t.columns}
    head = []
    for c in t.columns:
        attrs = f" data-col='{esc(c)}' data-type='{'num' if numeric[c] else 'text'}'"
        if c in t.better:
            attrs += f" data-better='{t.better[c]}' title='{t.better[c]} is better'"
        head.append(f"<th scope='col' tabindex='0'{attrs}>{esc(c)}</th>")
    rows = []
    for i, row in enumerate(t.rows):
        cells = []
        for c, text in zip(t.columns, row):
            attrs, classes = "", []
            value = number(text) if numeric[c] else None
            if value is not None:
                attrs += f" data-v='{value!r}'"
            if c in FILTERS:
                attrs += f" data-f='{esc(_key(c, text))}'"
            if not numeric[c]:
                classes.append("t")  # text: left-aligned
            if (i, c) in best:
                classes.append("best")
            if number(text) is None and c in t.better:
                classes.append("na")
            if classes:
                attrs += f" class='{' '.join(classes)}'"
            cells.append(f"<td{attrs}>{_cell(text, c in t.better)}</td>")
        rows.append(f"<tr data-i='{i}'>{''.join(cells)}</tr>")
    proto = f" data-protocol='{esc(t.protocol)}'" if t.protocol else ""
    n = len(t.rows)
    return (f"<div class='scroll'><table class='lb'{proto}><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            f"<div class='count' data-total='{n}'>{n} row{'s' if n != 1 else ''}</div>")


def _shows_number(text: str) -> bool:
    """Whether a cell is meant to hold a number (not one of the texts for no value)."""
    return text not in (NOT_A_NUMBER, "", "n/a", "missing", "not selected") and not text.startswith("diverged")


def _cell(text: str, value_column: bool) -> str:
    """A cell's text; in a value column a count's digits grouped, and a [95% CI] (with a
    p-value) on a second, smaller line."""
    esc = html.escape
    if not value_column:
        return esc(text)
    if re.fullmatch(r"\d{4,}", text):  # a count: 1658880 reads 1,658,880
        return f"{int(text):,}"
    ci = _CI.search(text)
    if not ci:
        return esc(text)
    rest = text[:ci.start()] + text[ci.end():]
    second = ci.group(1)
    p = _P.search(rest)
    if p:
        rest = rest[:p.start()] + rest[p.end():]
        second += f" {p.group(1)}"
    return f"{esc(' '.join(rest.split()))}<span class='ci'>{esc(second)}</span>"


STYLE = """
:root{--line:#d0d7de;--head:#f0f3f6;--best:#d8f3dc;--muted:#6a737d}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0 auto;
padding:0 16px 48px;max-width:1800px;color:#1f2328;line-height:1.4;font-size:14px}
h1{font-size:1.5em;margin:16px 0 8px}
h2{font-size:1.25em;margin:28px 0 6px;padding-top:6px;border-top:2px solid #8c959f}
h3{font-size:1.05em;margin:20px 0 4px} section{scroll-margin-top:44px}
p,ul.stamp,details.guide,figcaption{max-width:80em}
p{margin:4px 0 8px} ul.stamp{margin:4px 0 8px;padding-left:1.2em;color:#32383f;font-size:.93em}
code{font-size:.95em}
details.guide{background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:4px 10px;margin:8px 0}
details.guide summary{cursor:pointer;font-weight:600} details.guide li{margin:2px 0}
nav.toc{margin:8px 0;font-size:.9em;line-height:1.9} nav.toc a{margin-right:10px;white-space:nowrap;color:#0969da}
nav.toc a.h2{font-weight:600}
form.filters{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:6px 0;
display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;font-size:.9em}
form.filters select{font-size:1em;max-width:22em} form.filters button{font-size:1em}
.scroll{overflow:auto;width:fit-content;max-width:100%;max-height:78vh;border:1px solid var(--line);border-radius:4px;
margin:4px 0 2px}
table.lb{border-collapse:separate;border-spacing:0;font-size:12px;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{padding:3px 7px;border-right:1px solid #eaeef2;border-bottom:1px solid #eaeef2;
white-space:nowrap;text-align:right;vertical-align:top;background:#fff}
table.lb td.t{text-align:left}
table.lb thead th{position:sticky;top:0;z-index:2;background:var(--head);cursor:pointer;user-select:none;
border-bottom:1px solid #afb8c1;text-align:center;vertical-align:bottom;white-space:normal}
table.lb thead th:hover{background:#e1e7ec}
table.lb th[aria-sort=ascending]::after{content:" \\25B2";font-size:.8em}
table.lb th[aria-sort=descending]::after{content:" \\25BC";font-size:.8em}
table.lb th:first-child,table.lb td:first-child{position:sticky;left:0;z-index:1;white-space:normal;
min-width:12em;max-width:18em;text-align:left;border-right:1px solid #afb8c1}
table.lb thead th:first-child{z-index:3}
table.lb tbody tr:hover td{background:#f6f8fa}
table.lb td.best,table.lb tbody tr:hover td.best,.best{background:var(--best);font-weight:700}
table.lb td.na{color:var(--muted)}
table.lb .ci{display:block;font-size:.86em;color:var(--muted);font-weight:400}
[hidden]{display:none!important}
.count{font-size:.8em;color:var(--muted);margin-bottom:8px}
figure.fig{margin:6px 0 12px} figure.fig img{max-width:100%;height:auto;cursor:zoom-in;border:1px solid #eaeef2}
figure.fig.full{overflow-x:auto} figure.fig.full img{max-width:none;cursor:zoom-out}
figcaption{font-size:.9em;color:#32383f;margin-top:2px}
"""

SCRIPT = r"""
(function () {
  function value(cell, numeric) {
    if (!numeric) return cell.textContent.trim();
    return cell.hasAttribute('data-v') ? parseFloat(cell.getAttribute('data-v')) : null;
  }
  function sortBy(table, index, th) {
    var now = th.getAttribute('aria-sort'), dir;
    if (now === 'ascending') dir = 'descending';
    else if (now === 'descending') dir = 'ascending';
    else dir = th.getAttribute('data-better') === 'higher' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var numeric = th.getAttribute('data-type') === 'num', sign = dir === 'ascending' ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r) {
      return [value(r.cells[index], numeric), +r.getAttribute('data-i'), r];
    });
    rows.sort(function (a, b) {
      var x = a[0], y = b[0], empty = function (v) { return v === null || v === '' || v === '-'; };
      if (empty(x) || empty(y)) return empty(x) === empty(y) ? a[1] - b[1] : (empty(x) ? 1 : -1);
      var c = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return c ? sign * c : a[1] - b[1];
    });
    rows.forEach(function (r) { body.appendChild(r[2]); });
  }
  function applyFilters() {
    var want = {};
    document.querySelectorAll('form.filters select').forEach(function (s) { if (s.value) want[s.name] = s.value; });
    document.querySelectorAll('section[data-protocol]').forEach(function (s) {
      s.hidden = !!want.protocol && s.getAttribute('data-protocol') !== want.protocol;
    });
    document.querySelectorAll('table.lb').forEach(function (table) {
      var cols = Array.prototype.map.call(table.tHead.rows[0].cells,
                                          function (c) { return c.getAttribute('data-col'); });
      var shown = 0, total = table.tBodies[0].rows.length;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var ok = ['model', 'method', 'rank'].every(function (k) {
          var i = cols.indexOf(k);
          return !want[k] || i < 0 || r.cells[i].getAttribute('data-f') === want[k];
        });
        r.hidden = !ok;
        if (ok) shown++;
      });
      var count = table.parentNode.nextElementSibling;
      if (count && count.classList.contains('count'))
        count.textContent = shown === total ? total + (total === 1 ? ' row' : ' rows')
                                            : shown + ' of ' + total + ' rows (filtered)';
    });
  }
  document.querySelectorAll('table.lb').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener('click', function () { sortBy(table, i, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
  document.querySelectorAll('form.filters select').forEach(function (s) {
    s.addEventListener('change', applyFilters);
  });
  document.querySelectorAll('form.filters button.reset').forEach(function (b) {
    b.addEventListener('click', function () {
      document.querySelectorAll('form.filters select').forEach(function (s) { s.value = ''; });
      applyFilters();
    });
  });
  document.querySelectorAll('figure.fig img').forEach(function (img) {
    img.addEventListener('click', function () { img.parentNode.classList.toggle('full'); });
  });
})();
"""
