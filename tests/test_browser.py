"""A Snakemake report looked at in a real browser (headless chromium, see tests/browser.py): a tiny
workflow's leaderboard table, plot and captions show, by category, as a person would see them;
and a corrupt PNG in the same report is caught, so the check is not vacuous."""
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
