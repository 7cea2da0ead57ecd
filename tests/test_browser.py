"""A Snakemake report looked at in a real browser (headless chromium, see tests/browser.py): a tiny
workflow's leaderboard table, plot and captions show, by category, as a person would see them;
and a corrupt PNG in the same report is caught, so the check is not vacuous. Then a family's
report page (lora_tsd/aggregate/page.py) of a grid wider than a laptop's screen, as a person uses
it: it fetches nothing and its figures load, its widest table scrolls in its own box at 1400
pixels with the header and first column in view, each column's best cell is marked, a header
click sorts, the filters keep one model, method, rank or protocol, and its script runs inside
the report's data: frame too."""
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from browser import check_report

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
pytestmark = pytest.mark.browser

# A keyword's value that continues on the next line must start on its own line: Snakemake 9's
# parser takes `output: report(...,\n    category=...)` for an unknown keyword `category`.
# Jobs are shell commands on purpose: a `run:` job is a new snakemake process, and each one
# costs seconds of plugin start-up (the SLURM executor plugin asks `scontrol` on import).
SNAKEFILE = textwrap.dedent('''
    import sys
    PY = sys.executable

    rule all:
        input:
            "results/glue/leaderboard.html", "results/glue/leaderboard.csv",
            "results/glue/curve.png", "results/broken/corrupt.png",

    rule leaderboard:
        output:
            html=report("results/glue/leaderboard.html", caption="captions/leaderboard.rst",
                        category="GLUE", subcategory="Leaderboard",
                        labels={"task": "GLUE", "format": "table"}),
            csv=report("results/glue/leaderboard.csv", caption="captions/leaderboard.rst",
                       category="GLUE", subcategory="Leaderboard",
                       labels={"task": "GLUE", "format": "csv"}),
        shell: "{PY} make.py leaderboard {output.html} {output.csv}"

    rule curve:
        output:
            report("results/glue/curve.png", caption="captions/curve.rst",
                   category="GLUE", subcategory="Curves"),
        shell: "{PY} make.py curve {output}"

    rule corrupt:
        output:
            report("results/broken/corrupt.png", category="Broken", subcategory="Plots"),
        shell: "{PY} make.py corrupt {output}"
''')

MAKE = textwrap.dedent('''
    import sys

    what, *out = sys.argv[1:]
    if what == "leaderboard":
        import pandas as pd
        df = pd.DataFrame({"method": ["lora", "lora_dash", "lora_tsd", "full_ft"],
                           "accuracy": [0.81, 0.83, 0.85, 0.86]})
        df.to_html(out[0], index=False)
        df.to_csv(out[1], index=False)
    elif what == "curve":
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
        ax.plot([0, 1, 2, 3], [0.5, 0.7, 0.8, 0.85])
        fig.savefig(out[0])
    elif what == "corrupt":  # a PNG signature and garbage: no browser can decode it
        open(out[0], "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + b"not really a png" * 8)
''')

CAPTIONS = {
    "leaderboard.rst": "Accuracy per method on GLUE (rule ``{{ snakemake.rule }}``), **higher is better**.\n",
    "curve.rst": "Validation accuracy over training steps.\n",
}


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


@pytest.fixture(scope="module")
def report(chromium, tmp_path_factory):
    work = tmp_path_factory.mktemp("report_wf")
    (work / "Snakefile").write_text(SNAKEFILE)
    (work / "make.py").write_text(MAKE)
    (work / "captions").mkdir()
    for name, text in CAPTIONS.items():
        (work / "captions" / name).write_text(text)
    for args in (["--cores", "1"], ["--report", "report.html"]):
        out = subprocess.run([str(SNAKEMAKE), *args], cwd=work, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    view = check_report(work / "report.html", work / "shots", executable=chromium)
    return work, view


def test_report_renders_tables_images_and_captions(report):
    work, view = report
    assert view.categories == ["Broken", "GLUE"]
    assert ("Results", "GLUE") in view.menu
    assert view.subcategories["GLUE"] == ["Curves", "Leaderboard"]
    assert view.subcategories["Broken"] == []  # one subcategory: the app opens its list directly

    curve = view.entry("results/glue/curve.png")
    assert (curve.category, curve.subcategory, curve.kind) == ("GLUE", "Curves", "image")
    assert curve.image_loaded
    width, height = _png_size(work / "results/glue/curve.png")
    assert (curve.natural_width, curve.natural_height) == (width, height) == (320, 240)
    assert curve.shown_width == width
    assert curve.caption == "Validation accuracy over training steps."

    board = view.entry("results/glue/leaderboard.html")
    assert (board.category, board.subcategory, board.kind) == ("GLUE", "Leaderboard", "html")
    assert board.columns == {"task": "GLUE"} and board.toggle == {"format": "table"}
    assert board.frame_width > 0 and board.frame_height > 0
    assert board.table.header == ["method", "accuracy"]
    assert board.table.n_rows == 4 and board.table.visible
    assert board.table.rows[2] == ["lora_tsd", "0.85"]
    assert board.caption == "Accuracy per method on GLUE (rule leaderboard), higher is better."
    assert "<strong>higher is better</strong>" in board.caption_html

    # A CSV is not rendered: its eye button is a download link.
    csv = view.entry("results/glue/leaderboard.csv")
    assert (csv.kind, csv.mime, csv.download_name) == ("download", "text/csv", "leaderboard.csv")
    assert csv.toggle == {"format": "csv"} and not csv.tables

    assert sorted(e.path for e in view.entries) == sorted(view.embedded)
    assert [p for p in view.problems() if "corrupt.png" not in p] == []
    for shot in [curve.screenshot, board.screenshot, board.info_screenshot, *view.screenshots]:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_check_catches_a_corrupt_image(report):
    _, view = report
    bad = view.entry("corrupt.png")
    assert (bad.category, bad.kind, bad.mime) == ("Broken", "image", "image/png")
    assert bad.image_loaded is False and bad.natural_width == 0
    assert "results/broken/corrupt.png: image did not load (naturalWidth 0)" in view.problems()


# ---------------------------------------------------------------- a family's report page

COMMONSENSE = ["arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "hellaswag", "winogrande", "obqa"]
N_ITEMS = 20
MODELS = {"tiny-llama": 0.0, "HuggingFaceTB/SmolLM2-135M-Instruct": 0.1}
METHODS = {"lora": 0.0, "dora": 0.05, "lora_tsd": 0.1}  # score offsets: lora_tsd best on every task


def _items(**scores):
    hits = {m: [int(i < round(v * N_ITEMS)) for i in range(N_ITEMS)] for m, v in scores.items()}
    return {"doc_id": list(range(N_ITEMS)), "doc_hash": [f"h{i}" for i in range(N_ITEMS)], **hits}


def _record(path, model, method, task, acc, gen, rank=None):
    rec = {"model": model, "task": task, "family": "commonsense", "train_set": "commonsense170k", "method": method,
           "results": {"loglik": {"metrics": {"acc": acc, "acc_norm": acc - 0.05}, "n_test": N_ITEMS,
                                  "items": _items(acc=acc, acc_norm=acc - 0.05)},
                       "generative": {"metrics": {"acc": gen}, "n_test": N_ITEMS, "items": _items(acc=gen)}}}
    if method != "base":
        rec.update(rank=rank, seed=0, train={"trainable_params": {"lora": 1000, "dora": 1100}.get(method, 1010) * rank,
                                             "base_params": 1_000_000, "steps": 5, "final_loss": 1.0,
                                             "train_time_s": 2.0 + rank / 10, "peak_rss_mb": 100.0,
                                             "tokens_per_s": 900.0, "train_config": {"lr": 1e-3, "batch_size": 4}})
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture(scope="module")
def family_page(tmp_path_factory):
    """The commonsense page of a grid with 8 tasks (its score tables are wider than a laptop's
    screen), two models, three methods and two ranks, as rule plots writes it: the blocks rule
    aggregate dumps, rendered with the figures draw_all makes."""
    import pandas as pd

    from lora_tsd.aggregate import page, tables
    from lora_tsd.aggregate.figures import draw

    work = tmp_path_factory.mktemp("family_page")
    files = []
    for model, m_off in MODELS.items():
        for t_i, task in enumerate(COMMONSENSE):
            acc = 0.4 + 0.02 * t_i + m_off
            files.append(_record(work / f"base-{len(files)}.json", model, "base", task, acc, 0.0))
            for method, off in METHODS.items():
                for rank in (4, 8):
                    files.append(_record(work / f"r-{len(files)}.json", model, method, task, acc + off + rank / 200,
                                         0.2 + off, rank))
    tables.write(files, {"name": "wide"}, {"commit": "c", "config_hash": "h", "data": "synthetic"}, work / "lb.md",
                 work / "lb.csv", work / "lb.json", out_blocks={"commonsense": work / "commonsense.json"})
    summary = pd.DataFrame(json.loads((work / "lb.json").read_text())["summary"])
    figures = draw.draw_all(summary, [], work / "plots")
    blocks, title = page.load(work / "commonsense.json")
    captions = {n: (Path(__file__).parent.parent / "workflow" / "report" / "plots" / f"{n}.rst").read_text()
                for n in draw.FILES}
    html = work / "commonsense.html"
    html.write_text(page.render(blocks, "commonsense", title, {n: Path(p).read_bytes() for n, p in figures.items()},
                                captions))
    return html


_ROWS = """(i) => [...document.querySelectorAll('table.lb')[i].tBodies[0].rows].filter(r => !r.hidden).map(r =>
    [...r.cells].map(c => ({text: c.childNodes[0] ? c.childNodes[0].textContent.trim() : '', v: c.dataset.v ?? null,
                            best: c.classList.contains('best')})))"""


def _rows(page, i=0):
    return page.evaluate(_ROWS, i)


def _header(page, i=0):
    return page.evaluate("(i) => [...document.querySelectorAll('table.lb')[i].tHead.rows[0].cells]"
                         ".map(c => c.textContent.trim())", i)


def test_a_family_page_needs_no_network_and_its_figures_load(family_page, chromium, tmp_path):
    from browser import open_page

    with open_page(family_page, executable=chromium) as s:
        images = s.page.evaluate("""async () => Promise.all([...document.images].map(async img => {
            try { await img.decode(); } catch (e) {}
            return {alt: img.alt, ok: img.complete && img.naturalWidth > 0, w: img.naturalWidth,
                    shown: img.getBoundingClientRect().width};
        }))""")
        s.page.screenshot(path=str(tmp_path / "top.png"))
        assert s.blocked == [] and s.console_errors == []
        assert [u for u in s.requests if not u.startswith("data:")] == [family_page.resolve().as_uri()]
    assert [i["alt"] for i in images] == ["Scores per task", "Score against rank", "Score against trainable parameters",
                                          "Training losses", "Task-specific-direction profile",
                                          "Stability of the selected directions"]
    assert all(i["ok"] and 0 < i["shown"] <= 1400 for i in images), images


def test_the_widest_table_scrolls_in_its_box_on_a_1400_pixel_screen(family_page, chromium, tmp_path):
    from browser import open_page

    with open_page(family_page, executable=chromium, viewport=(1400, 900)) as s:
        page = s.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # no sideways scroll of the page
        boxes = page.evaluate("""() => [...document.querySelectorAll('div.scroll')].map(d => ({
            box: d.getBoundingClientRect().right, client: d.clientWidth, table: d.scrollWidth}))""")
        widest = max(range(len(boxes)), key=lambda i: boxes[i]["table"])
        assert boxes[widest]["table"] > 1400, boxes[widest]  # the check is not vacuous: it is wider than the screen
        assert all(b["box"] <= 1400 for b in boxes), boxes
        # Scrolled to its far right, the box keeps the first column (model) and the header in view.
        box = page.locator("div.scroll").nth(widest)
        box.evaluate("d => { d.scrollLeft = d.scrollWidth; d.scrollTop = d.scrollHeight; }")
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        edges = box.evaluate("""d => {
            const t = d.querySelector('table'), b = d.getBoundingClientRect();
            const first = t.tBodies[0].rows[t.tBodies[0].rows.length - 1].cells[0].getBoundingClientRect();
            const head = t.tHead.rows[0].cells[4].getBoundingClientRect();
            return {scrolled: d.scrollLeft, left: b.left, first: first.left, top: b.top, head: head.top};
        }""")
        page.screenshot(path=str(tmp_path / "scrolled.png"))
    assert edges["scrolled"] > 0
    assert abs(edges["first"] - edges["left"]) <= 2 and abs(edges["head"] - edges["top"]) <= 2, edges


def test_each_column_s_best_cell_is_marked(family_page, chromium):
    from browser import open_page

    with open_page(family_page, executable=chromium) as s:
        header, rows = _header(s.page), _rows(s.page)
        col = header.index("avg acc")
        style = s.page.evaluate("""() => { const c = getComputedStyle(document.querySelector('table.lb td.best'));
                                           return [c.fontWeight, c.backgroundColor]; }""")
    # Per model, lora_tsd at rank 8 scores highest on every task: its cells, and only those.
    for row in rows:
        marked = [header[i] for i, cell in enumerate(row) if cell["best"]]
        if (row[1]["text"], row[2]["text"]) == ("lora_tsd", "8"):
            assert marked == [c for c in header if c not in ("model", "method", "rank", "seeds")], row
        else:
            assert marked == [], row
    assert len([r for r in rows if r[col]["best"]]) == len(MODELS)
    assert style == ["700", "rgb(216, 243, 220)"]


def test_clicking_a_header_sorts_the_rows(family_page, chromium):
    from browser import open_page

    with open_page(family_page, executable=chromium) as s:
        page = s.page
        header = _header(page)
        th = page.locator("table.lb").first.locator("thead th").nth(header.index("avg acc"))
        th.click()  # a score: the best first
        first = [float(r[header.index("avg acc")]["v"]) for r in _rows(page)]
        sort = th.get_attribute("aria-sort")
        th.click()
        second = [float(r[header.index("avg acc")]["v"]) for r in _rows(page)]
        page.locator("table.lb").first.locator("thead th").nth(header.index("method")).click()
        methods = [r[1]["text"] for r in _rows(page)]
        # The cost table's train time: lower is better, so the first click puts the fastest first.
        cost = page.evaluate("() => [...document.querySelectorAll('table.lb')].findIndex(t => "
                             "t.tHead.textContent.includes('trainable params'))")
        cost_header = _header(page, cost)
        page.locator("table.lb").nth(cost).locator("thead th").nth(cost_header.index("train time (s)")).click()
        times = [float(r[cost_header.index("train time (s)")]["v"]) for r in _rows(page, cost)]
    assert sort == "descending" and first == sorted(first, reverse=True) and len(first) == 2 * (1 + 3 * 2)
    assert second == sorted(first)
    assert methods == sorted(methods)
    assert times == sorted(times) and times[0] < times[-1]


def test_the_filters_keep_one_model_method_rank_or_protocol(family_page, chromium):
    from browser import open_page

    with open_page(family_page, executable=chromium) as s:
        page = s.page
        total = len(_rows(page))
        page.select_option("select[name=model]", "tiny-llama")
        by_model = _rows(page)
        count = page.locator("div.count").first.inner_text()
        page.select_option("select[name=method]", "lora_tsd")
        page.select_option("select[name=rank]", "8")
        one = _rows(page)
        paired = page.evaluate("""() => [...document.querySelectorAll('table.lb')[1].tBodies[0].rows]
            .filter(r => !r.hidden).length""")
        page.click("form.filters button.reset")
        page.select_option("select[name=protocol]", "generative")
        shown = page.evaluate("""() => [...document.querySelectorAll('section')].map(s =>
            [s.id, s.getBoundingClientRect().height > 0])""")
        page.click("form.filters button.reset")
        back = len(_rows(page))
    assert total == 14 and [r[0]["text"] for r in by_model] == ["tiny-llama"] * 7 and count == "7 of 14 rows (filtered)"
    assert [(r[0]["text"], r[1]["text"], r[2]["text"]) for r in one] == [("tiny-llama", "lora_tsd", "8")]
    assert paired == 1  # every table with those columns follows the filters
    visible = {i: v for i, v in shown}
    assert not visible["commonsense-loglik"] and not visible["paired-with-lora-commonsense-loglik"]
    assert visible["commonsense-generative"] and visible["paired-with-lora-commonsense-generative"]
    assert visible["cost-commonsense"] and visible["figure-bars"] and visible["figure-pareto"]
    assert back == total


def test_the_page_sorts_inside_the_report_s_frame(family_page, chromium, tmp_path):
    """The Snakemake report shows a page in an <iframe src="data:text/html;base64,...">: its
    script runs there too."""
    import base64

    from browser import open_page

    frame = tmp_path / "frame.html"
    frame.write_text("<!DOCTYPE html><html><body><iframe style='width:1380px;height:860px' src='data:text/html;"
                     f"base64,{base64.b64encode(family_page.read_bytes()).decode()}'></iframe></body></html>")
    with open_page(frame, executable=chromium) as s:
        inner = s.page.frames[1]
        inner.wait_for_load_state("load")
        inner.locator("table.lb").first.locator("thead th").nth(1).click()
        methods = inner.evaluate("() => [...document.querySelector('table.lb').tBodies[0].rows]"
                                 ".map(r => r.cells[1].textContent)")
        assert s.console_errors == [] and s.blocked == []
    assert methods == sorted(methods) and len(methods) == 14
