"""The report pages' HTML writer (lora_tsd/aggregate/page.py), read without a browser: each
column's best value marked by its direction, ties and cells without a number, per model; the
page self-contained (inline style and script, figures as data URIs, nothing fetched); a
family's figures below the tables they illustrate; the blocks the aggregate rule hands to the
plots rule render the same page. tests/test_browser.py clicks the same pages in chromium."""
import base64
import io
import json
import re
from html.parser import HTMLParser

import pytest

from lora_tsd.aggregate import page, tables
from lora_tsd.aggregate.page import HIGHER, LOWER, Table


def _table(rows, better, columns=("model", "method", "a", "b")):
    return Table(list(columns), [list(r) for r in rows], better)


def _marked(table: Table) -> dict[str, list[str]]:
    """Column -> the methods whose cell is marked best (in row order)."""
    found = page.best_cells(table)
    return {c: [table.rows[i][1] for i in sorted(i for i, col in found if col == c)] for c in table.better}


# ---------------------------------------------------------------- cell values

@pytest.mark.parametrize("text, value", [
    ("48.33 ± 2.89 [39.2, 57.5] ▲", 48.33), ("+1.20 [-0.10, +2.50] p=0.031 ▲", 1.2),
    ("-3.75 [-7.08, -0.83] p=0.022 ▼", -3.75),
    ("80.00 (median 80.00) [70.0, 90.0]", 80.0), ("61.67 (1 of 2 seeds)", 61.67), ("+0.0009", 0.0009), ("6144", 6144.0),
    ("2e-4", 2e-4), ("-", None), ("n/a", None), ("missing", None), ("diverged (step 3, seed 0)", None),
    ("not selected", None), ("27a3fb4c1d", None), ("lora †", None), ("", None)])
def test_a_cell_s_value_is_the_number_it_starts_with(text, value):
    assert page.number(text) == value


# ---------------------------------------------------------------- best per column

def test_the_best_value_follows_each_column_s_direction():
    t = _table([("m", "lora", "50.00 ± 1.00", "6144"), ("m", "dora", "52.50 ± 2.00", "6500"),
                ("m", "pissa", "49.00", "6000")], {"a": HIGHER, "b": LOWER})
    assert _marked(t) == {"a": ["dora"], "b": ["pissa"]}


def test_tied_values_are_all_marked_and_an_all_equal_column_has_no_mark():
    t = _table([("m", "lora", "50.00 ± 1.00 [40.0, 60.0]", "538"),
                ("m", "dora", "50.00 ± 3.00 [45.0, 55.0] ▲", "538"),
                ("m", "pissa", "49.99", "538")], {"a": HIGHER, "b": LOWER})
    # Two cells that read 50.00 tie, whatever their spreads; 538 MB everywhere marks nothing.
    assert _marked(t) == {"a": ["lora", "dora"], "b": []}


def test_cells_without_a_number_are_never_best_nor_compared():
    t = _table([("m", "lora", "n/a", "diverged (step 3, seed 0)"), ("m", "dora", "-", "40.00"),
                ("m", "pissa", "missing", "39.00"), ("m", "vera", "n/a", "-")], {"a": LOWER, "b": HIGHER})
    # a: no number at all; b: two numbers, the higher wins (the diverged cell is not a 0).
    assert _marked(t) == {"a": [], "b": ["dora"]}
    one = _table([("m", "lora", "+0.0100", "1"), ("m", "dora", "n/a", "2")], {"a": LOWER})
    assert _marked(one) == {"a": []}  # one number is no comparison


def test_the_best_is_chosen_among_each_model_s_rows():
    t = _table([("small", "lora", "40.00", "1"), ("small", "dora", "45.00", "1"),
                ("large", "lora", "70.00", "1"), ("large", "dora", "65.00", "1")], {"a": HIGHER})
    assert sorted(page.best_cells(t)) == [(1, "a"), (2, "a")]  # small's dora, large's lora


def test_negative_differences_and_forgetting_compare_as_numbers():
    paired = _table([("m", "dora", "-3.75 [-7.08, -0.83] p=0.022 ▼", "+0.0200"),
                     ("m", "pissa", "-0.50 [-1.00, +0.10] p=0.300", "-0.0100"),
                     ("m", "vera", "-10.00 [-12.0, -8.0] p<0.001 ▼", "+0.0009")], {"a": HIGHER, "b": LOWER})
    assert _marked(paired) == {"a": ["pissa"], "b": ["pissa"]}


def test_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="'best'"):
        page.best_cells(_table([("m", "x", "1", "2"), ("m", "y", "2", "3")], {"a": "best"}))


# ---------------------------------------------------------------- the HTML

class _Cells(HTMLParser):
    """Every table's header, and each body cell's text and attributes."""

    def __init__(self, text):
        super().__init__()
        self.tables, self._cell, self._where, self._ci = [], None, None, False
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "span" and attrs.get("class") == "ci":
            self._ci = True  # the cell's second line: kept apart from its text
        elif tag == "table":
            self.tables.append({"attrs": attrs, "head": [], "head_attrs": [], "rows": []})
        elif tag in ("thead", "tbody"):
            self._where = tag
        elif tag == "tr" and self._where == "tbody":
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = {"text": "", "attrs": attrs}

    def handle_endtag(self, tag):
        if tag == "span":
            self._ci = False
        elif tag in ("th", "td") and self._cell is not None:
            t = self.tables[-1]
            if self._where == "thead":
                t["head"].append(self._cell["text"])
                t["head_attrs"].append(self._cell["attrs"])
            else:
                t["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["ci" if self._ci else "text"] = self._cell.get("ci" if self._ci else "text", "") + data


def _best_in(html_table) -> dict[str, list[str]]:
    """Column -> (method, cell text) of each cell marked best."""
    out = {}
    method = html_table["head"].index("method")
    for row in html_table["rows"]:
        for name, cell in zip(html_table["head"], row):
            if "best" in (cell["attrs"].get("class") or "").split():
                out.setdefault(name, []).append((row[method]["text"], cell["text"]))
    return out


def _png(colour="#1f77b4") -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5), dpi=50)
    fig.subplots().bar([0, 1], [1, 2], color=colour)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


N_ITEMS = 20


def _items(**scores):
    """Per-item 0/1 scores with the given means (the first round(mean * N_ITEMS) items right)."""
    hits = {m: [int(i < round(v * N_ITEMS)) for i in range(N_ITEMS)] for m, v in scores.items()}
    return {"doc_id": list(range(N_ITEMS)), "doc_hash": [f"h{i}" for i in range(N_ITEMS)], **hits}


def _cs_results(acc, gen):
    return {"loglik": {"metrics": {"acc": acc, "acc_norm": acc - 0.1}, "n_test": N_ITEMS,
                       "items": _items(acc=acc, acc_norm=acc - 0.1)},
            "generative": {"metrics": {"acc": gen}, "n_test": N_ITEMS, "items": _items(acc=gen)}}


def _record(path, method, task, results, rank=None, seed=None, family="commonsense", params=None, tokens=None,
            model="m", train_set="commonsense170k"):
    rec = {"model": model, "task": task, "family": family, "train_set": train_set, "method": method,
           "results": results}
    if method != "base":
        rec.update(rank=rank, seed=seed, train={"trainable_params": params or 10 * rank, "base_params": 100_000,
                                                "steps": 5, "final_loss": 1.0, "train_time_s": 2.0,
                                                "peak_rss_mb": 100.0, "tokens_per_s": tokens,
                                                "train_config": {"lr": 1e-3, "batch_size": 4}})
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def written(tmp_path):
    """A two-model grid through tables.write: pages and the blocks the plots rule renders."""
    files = []
    spec = {"lora": (0.60, 0.30, 1000, 900.0), "dora": (0.70, 0.30, 1100, 800.0), "lora_tsd": (0.70, 0.20, 1000, 950.0)}
    for method, (acc, gen, params, tokens) in spec.items():
        for task, bump in (("arc_easy", 0.0), ("piqa", 0.05)):
            files.append(_record(tmp_path / f"{method}-{task}.json", method, task, _cs_results(acc + bump, gen),
                                 rank=4, seed=0, params=params, tokens=tokens))
    for task in ("arc_easy", "piqa"):
        files.append(_record(tmp_path / f"base-{task}.json", "base", task, _cs_results(0.5, 0.0)))
    files.append(_record(tmp_path / "g.json", "lora", "sst2", {"glue": {"metrics": {"accuracy": 0.9}, "n_test": 8}},
                         rank=4, seed=0, family="glue", model="enc", train_set="sst2"))
    pages = {"commonsense": tmp_path / "cs.html", None: tmp_path / "lb.html"}
    blocks = {"commonsense": tmp_path / "cs.json", "glue": tmp_path / "glue.json", "instruction": tmp_path / "if.json"}
    tables.write(files, {"name": "t"}, {"commit": "c", "config_hash": "h", "data": "d"}, tmp_path / "lb.md",
                 tmp_path / "lb.csv", tmp_path / "lb.json", out_pages=pages, out_blocks=blocks)
    return tmp_path


def test_the_written_page_marks_each_table_s_best_cells(written):
    html = _Cells((written / "cs.html").read_text())
    scores, paired_loglik = html.tables[0], html.tables[1]
    assert scores["attrs"]["data-protocol"] == "loglik" and scores["head"][:4] == ["model", "method", "rank", "seeds"]
    # arc_easy acc: dora and lora_tsd tie at 70.00 (base 50, lora 60); acc_norm likewise.
    best = _best_in(scores)
    assert best["arc_easy acc"] == [("dora", "70.00"), ("lora_tsd", "70.00")]
    assert best["avg acc"] == [("dora", "72.50 ▲"), ("lora_tsd", "72.50 ▲")]  # above LoRA: its CI excludes 0
    assert "seeds" not in best and "rank" not in best  # no direction: never marked
    heads = dict(zip(scores["head"], scores["head_attrs"]))
    assert heads["arc_easy acc"]["data-better"] == "higher" and "data-better" not in heads["seeds"]
    assert heads["arc_easy acc"]["data-type"] == "num" and heads["method"]["data-type"] == "text"
    # The paired table: dora and lora_tsd both +10.00 over LoRA in every column, so no column has a best.
    assert paired_loglik["head"][:3] == ["model", "method", "rank"] and len(paired_loglik["rows"]) == 2
    assert _best_in(paired_loglik) == {}
    # The generative table: dora and lora tie at 30.00 above lora_tsd's 20.00, the base at 0.
    generative = next(t for t in html.tables if t["attrs"].get("data-protocol") == "generative")
    assert _best_in(generative)["arc_easy acc"] == [("dora", "30.00"), ("lora", "30.00")]
    # Cost: the fewest parameters (lora and lora_tsd tie), the most tokens/s, no mark where all are equal.
    cost = next(t for t in html.tables if "trainable params" in t["head"])
    best = _best_in(cost)
    assert best["trainable params"] == [("lora", "1,000"), ("lora_tsd", "1,000")]  # digits grouped, value kept
    params = cost["head"].index("trainable params")
    assert [r[params]["attrs"]["data-v"] for r in cost["rows"]] == ["1100.0", "1000.0", "1000.0"]
    assert best["tokens/s"] == [("lora_tsd", "950")]
    assert "train time (s)" not in best and "peak memory (MB)" not in best  # 2.0 s and 100 MB everywhere
    assert "adapter (MB)" not in best  # no adapter sizes: "-" everywhere, no number to compare
    heads = dict(zip(cost["head"], cost["head_attrs"]))
    assert heads["trainable params"]["data-better"] == "lower" and heads["tokens/s"]["data-better"] == "higher"
    # Cells without a number: greyed, no value to sort by.
    adapter = cost["head"].index("adapter (MB)")
    assert all(r[adapter]["text"] == "-" and r[adapter]["attrs"].get("class") == "na" and
               "data-v" not in r[adapter]["attrs"] for r in cost["rows"])


def test_values_sort_by_their_number_and_filters_read_the_method_without_its_mark(written):
    html = _Cells((written / "cs.html").read_text())
    scores = html.tables[0]
    col = scores["head"].index("avg acc")
    # rows: base, dora, lora, lora_tsd
    assert [r[col]["attrs"]["data-v"] for r in scores["rows"]] == ["50.0", "72.5", "62.5", "72.5"]
    assert [r[scores["head"].index("rank")]["attrs"]["data-f"] for r in scores["rows"]] == ["-", "4", "4", "4"]
    selects = {a["name"] for t, a in html.tags if t == "select"}
    assert selects == {"model", "method", "rank", "protocol"}
    options = re.findall(r"<select name='method'>(.*?)</select>", (written / "cs.html").read_text())[0]
    assert re.findall(r"<option>([^<]*)</option>", options) == ["base", "dora", "lora", "lora_tsd"]


def test_a_page_is_self_contained(written):
    text = (written / "lb.html").read_text()
    tags = _Cells(text).tags
    assert not [a for t, a in tags if t in ("link", "img", "script", "iframe") and
                re.match(r"(https?:)?//", a.get("src", "") + a.get("href", ""))]
    assert not [a for t, a in tags if t == "script" and "src" in a]
    assert not re.search(r"https?://|@import|url\(", text)  # no address anywhere: style and script inline
    assert text.count("<style>") == 1 and text.count("<script>") == 1
    # The whole leaderboard: both families' tables, no figure (those are on the family pages).
    assert "glue — glue" in text and "<figure" not in text


def test_a_family_page_shows_its_figures_below_the_tables_they_illustrate(written):
    blocks, title = page.load(written / "cs.json")
    assert title == "commonsense: t leaderboard"
    pngs = {name: _png() for name in page.FIGURES}
    text = page.render(blocks, "commonsense", title, pngs, {"pareto": "Score against ``trainable`` parameters."})
    # Sections in page order: each protocol's tables, then the score figures, the cost table and
    # its pareto figure, the cells and the training figures.
    headings = re.findall(r"<h[23]>([^<]*)</h[23]>", text)
    assert headings == ["commonsense — loglik", "Paired with LoRA — commonsense, loglik",
                        "commonsense — generative", "Paired with LoRA — commonsense, generative",
                        "Figure: Scores per task", "Figure: Score against rank",
                        "Cost — commonsense", "Figure: Score against trainable parameters",
                        "Cells — commonsense", "Figure: Training losses",
                        "Figure: Task-specific-direction profile", "Figure: Stability of the selected directions"]
    images = re.findall(r"<img alt='([^']*)' [^>]*src='data:image/png;base64,([^']*)'>", text)
    assert [alt for alt, _ in images] == [page.FIGURES[n] for n in ("bars", "rank", "pareto", "loss_curves",
                                                                    "tsd_profile", "tsd_overlap")]
    assert all(base64.b64decode(data) == pngs["bars"] for _, data in images)
    assert "<figcaption>Score against trainable parameters.</figcaption>" in text  # rst literals unquoted
    # Protocol filter: each protocol's sections carry it, the figures and costs none.
    sections = re.findall(r"<section id='([^']*)'(?: data-protocol='(\w+)')?>", text)
    assert sections[:4] == [("commonsense-loglik", "loglik"), ("paired-with-lora-commonsense-loglik", "loglik"),
                            ("commonsense-generative", "generative"),
                            ("paired-with-lora-commonsense-generative", "generative")]
    assert all(p == "" for _, p in sections[4:])
    # Without figures (the leaderboard's pages, or a figure the plots rule did not draw): none shown.
    assert "<figure" not in page.render(blocks, "commonsense", title)
    assert text.count("<figure") == 6


def test_the_blocks_round_trip_renders_the_page_aggregate_would(written):
    blocks, title = page.load(written / "cs.json")
    assert page.render(blocks, "commonsense", title) == (written / "cs.html").read_text()
    # A family without rows (instruction here) still gets a page that says so.
    empty, title = page.load(written / "if.json")
    assert "This grid has no instruction rows." in page.render(empty, "instruction", title)
    glue, title = page.load(written / "glue.json")
    text = page.render(glue, "glue", title)
    assert "glue — glue" in text and "commonsense — loglik" not in text


def test_the_markdown_leaderboard_has_no_figure_blocks(written):
    md = (written / "lb.md").read_text()
    assert "figure" not in md.lower() and "## commonsense — loglik" in md


def test_a_score_cell_shows_its_ci_on_a_second_line():
    t = _table([("m", "lora", "48.33 ± 2.89 [39.2, 57.5] ▲", "+1.20 [-0.10, +2.50] p=0.031 ▲"),
                ("m", "dora", "50.00", "-")], {"a": HIGHER, "b": HIGHER})
    text = page.render([(None, "h2", "x"), (None, "table", t)], None, "t")
    assert "<td data-v='48.33'>48.33 ± 2.89 ▲<span class='ci'>[39.2, 57.5]</span></td>" in text
    assert "1.20 ▲<span class='ci'>[-0.10, +2.50] p=0.031</span>" in text


def test_every_figure_the_plots_rule_draws_has_a_heading_and_a_place_on_the_page(written):
    from lora_tsd.aggregate.figures import draw

    assert set(page.FIGURES) == set(draw.FILES)
    blocks, _ = page.load(written / "cs.json")
    assert sorted(c for _, tag, c in blocks if tag == "figure") == sorted(draw.FILES)
