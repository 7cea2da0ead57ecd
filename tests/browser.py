"""What a person sees in a Snakemake 9 HTML report, read from a real headless chromium.

`check_report(report_html, shots_dir)` opens the report (a React single-page app whose results
are embedded as data: URIs) in Debian's chromium, driven by Playwright's Python package pointed at
that binary (Playwright never downloads a browser here). It clicks through the app as a person
would: every category in the menu, every subcategory, every value of a label toggle, and for
each row of a results list the eye button (which shows the result in the content pane) and the
info button (which shows its caption, size and rule). It returns a `ReportView` and leaves a
screenshot of every step in `shots_dir`.

How the report shows each kind of result (snakemake/report/html_reporter/template/components):
  .png .jpg .svg  an <img> in the content pane (ResultViewButton -> ContentDisplay "img")
  .html           an <iframe src="data:text/html;..."> filling the content pane: the way to get
                  a table *rendered* (e.g. pandas `DataFrame.to_html`)
  .pdf            an <iframe> (chromium's PDF viewer)
  anything else   (.csv .tsv .md .txt .json ...) no view: the eye button is a download link
The menu lists categories (sorted) under RESULTS; a category with one subcategory opens its
results list directly and its subcategory name is shown nowhere. Results in a subcategory are a
table with one column per label (or one FILE column with the path when any result lacks labels);
a label (not the first) with exactly two values that split the results in halves becomes a toggle
above the table. The caption (rst rendered through jinja) is shown only in the info panel, under
DESCRIPTION.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# The app's layout: #app > div > [div (navbar show button), nav (navbar), div.grow (content)].
NAVBAR = "#app > div > nav"
PANEL = f"{NAVBAR} > div > div.p-3"  # the navbar's body: menu, category, results list, info
CRUMBS = f"{NAVBAR} > div > nav ol > li"  # breadcrumbs (the last <li> is the search box)
CONTENT = "#app > div > div.grow"

_TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def find_chromium() -> str | None:
    """The chromium to drive: $CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class TableView:
    """An HTML <table> as rendered inside a result's iframe."""

    header: list[str]  # the first header row's cell texts (<thead>, or a first row of <th>)
    rows: list[list[str]]  # the body rows' cell texts (<th> and <td>)
    header_rows: list[list[str]] = field(default_factory=list)  # all header rows
    width: float = 0.0  # rendered size in CSS pixels; 0 when not displayed
    height: float = 0.0

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def visible(self) -> bool:
        return self.width > 0 and self.height > 0


@dataclass
class Entry:
    """One result as reached through the menus."""

    category: str  # as the menu shows it
    subcategory: str | None  # None when the app skipped the level (the category has one)
    columns: dict[str, str]  # its row in the results list: column header -> cell ("File" -> path)
    toggle: dict[str, str]  # label -> value selected in the toggle above the list, if any
    kind: str  # "image" | "html" | "pdf" | "download"
    mime: str  # from the data: URI the app shows or offers for download
    path: str = ""  # the result's path, as the info panel's breadcrumb shows it
    # kind "image": the <img> in the content pane
    image_loaded: bool | None = None  # complete and decoded with naturalWidth > 0
    natural_width: int | None = None
    natural_height: int | None = None
    shown_width: float | None = None  # rendered box in CSS pixels
    # kind "html"/"pdf": the <iframe> in the content pane
    frame_width: float | None = None
    frame_height: float | None = None
    tables: list[TableView] = field(default_factory=list)
    text: str = ""  # the iframe body's visible text (kind "html"), up to 5000 characters
    download_name: str | None = None  # kind "download": the link's download= file name
    # the info panel
    caption: str = ""  # visible text under DESCRIPTION ("" when there is no caption)
    caption_html: str = ""
    info: dict[str, str] = field(default_factory=dict)  # section heading (lower case) -> text
    screenshot: Path | None = None  # after clicking the eye button (kinds image, html, pdf)
    info_screenshot: Path | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def table(self) -> TableView:
        """The only table of an html result."""
        assert len(self.tables) == 1, f"{self.path}: {len(self.tables)} tables"
        return self.tables[0]


@dataclass
class ReportView:
    menu: list[tuple[str | None, str]]  # the start menu: (heading, item text), in order
    categories: list[str]  # as listed under RESULTS (or the single one behind "Results")
    subcategories: dict[str, list[str]]  # category -> subcategories listed; [] when skipped
    entries: list[Entry]
    embedded: dict[str, str]  # every result the report embeds: path -> mime type
    screenshots: list[Path]
    console_errors: list[str]  # console errors and uncaught page errors

    def entry(self, key: str) -> Entry:
        """The entry whose path is `key`, or else whose file name is `key` (exactly one)."""
        found = [e for e in self.entries if e.path == key] or [e for e in self.entries if e.name == key]
        if len(found) != 1:
            raise KeyError(f"{key!r}: {len(found)} entries among {[e.path for e in self.entries]}")
        return found[0]

    def problems(self) -> list[str]:
        """What a person would find broken: images that do not load, html results whose frame
        is not shown, tables without rows, embedded results no menu leads to, script errors."""
        out = []
        for e in self.entries:
            if e.kind == "image" and not e.image_loaded:
                out.append(f"{e.path}: image did not load (naturalWidth {e.natural_width})")
            if e.kind in ("html", "pdf") and not (e.frame_width and e.frame_height):
                out.append(f"{e.path}: {e.kind} frame is not shown")
            for i, t in enumerate(e.tables):
                if not t.rows:
                    out.append(f"{e.path}: table {i} has no rows")
                elif not t.visible:
                    out.append(f"{e.path}: table {i} is not displayed")
        reached = {e.path for e in self.entries}
        out += [f"{p}: embedded but no menu leads to it" for p in sorted(set(self.embedded) - reached)]
        out += [f"console: {m}" for m in self.console_errors]
        return out


def check_report(report_html: Path, shots_dir: Path, *, executable: str | None = None,
                 timeout_ms: int = 15_000, viewport: tuple[int, int] = (1400, 900)) -> ReportView:
    """Open `report_html` in headless chromium, click through it and return what it shows."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (tools/install-chromium.sh installs it)")
    shots_dir = Path(shots_dir)
    shots_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # --disable-dev-shm-usage: containers often have a tiny /dev/shm (Debian's own launcher
        # script adds it for the same reason).
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(timeout_ms)
            return _Walker(page, shots_dir).run(Path(report_html).resolve().as_uri())
        finally:
            browser.close()


class _Walker:
    def __init__(self, page, shots_dir: Path):
        self.page = page
        self.shots_dir = shots_dir
        self.shots: list[Path] = []
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text[:500]))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"[:500]))

    # -- navigation --------------------------------------------------------------------------
    def run(self, url: str) -> ReportView:
        page = self.page
        page.goto(url)
        page.wait_for_selector(f"{PANEL} > ul > li > a")  # React rendered the menu
        self._settle()
        self._shot("menu")
        items = self._menu()  # (li index, heading, text) of each menu item
        menu = [(h, t) for _, h, t in items]
        embedded = page.evaluate(
            "() => Object.fromEntries(Object.entries(results).map(([p, r]) => [p, r.mime_type]))")

        if any(h == "Results" for _, h, _ in items):  # several categories, under RESULTS
            cat_items = [(li, t) for li, h, t in items if h == "Results"]
        else:  # one category behind a lone "Results" item (or no results at all)
            cat_items = [(li, t) for li, _, t in items if t == "Results"]

        categories, subcategories, entries = [], {}, []
        for item, text in cat_items:
            self._open(item)
            category = self._category_name(text)
            categories.append(category)
            if self._mode() == "category":
                subs = self._panel_items()
                subcategories[category] = subs
                self._shot(f"{category}")
                for sub_i, sub in enumerate(subs):
                    entries += self._walk_list(item, category, sub_i, sub)
            else:
                subcategories[category] = []
                entries += self._walk_list(item, category, None, None)
        return ReportView(menu=menu, categories=categories, subcategories=subcategories,
                          entries=entries, embedded=embedded, screenshots=self.shots,
                          console_errors=self.errors)

    def _open(self, menu_item: int, sub_i: int | None = None, toggle: dict[str, str] | None = None):
        """From the start menu: click a category, then a subcategory, then toggle values."""
        page = self.page
        page.locator(CRUMBS).first.locator("a").click()  # home
        self._wait_mode("menu")
        page.locator(f"{PANEL} > ul > li").nth(menu_item).locator("a").click()
        page.wait_for_function("() => app.state.navbarMode !== 'menu'")
        if sub_i is not None:
            page.locator(f"{PANEL} > ul > li").nth(sub_i).locator("a").click()
            self._wait_mode("subcategory")
        for value in (toggle or {}).values():  # the app shows at most one toggle
            page.locator(f"{PANEL} fieldset label").filter(
                has_text=re.compile(rf"^\s*{re.escape(value)}\s*$")).click()
        self._settle()

    def _walk_list(self, menu_item: int, category: str, sub_i: int | None, sub: str | None):
        page = self.page
        self._open(menu_item, sub_i)
        toggles = page.evaluate(f"""() => [...document.querySelectorAll('{PANEL} fieldset')].map(f => [
            f.querySelector(':scope > span').textContent.trim(),
            [...f.querySelectorAll('input[type=radio]')].map(i => i.value)])""")
        # The app allows one toggle; walk each of its values.
        combos = [{label: v} for label, values in toggles for v in values] or [{}]
        out = []
        for toggle in combos:
            self._open(menu_item, sub_i, toggle)
            self._shot("-".join([category, sub or "", *toggle.values()]))
            n_rows = page.locator(f"{PANEL} table tbody > tr").count()
            for row_i in range(n_rows):
                out.append(self._walk_entry(menu_item, category, sub_i, sub, toggle, row_i))
        return out

    def _walk_entry(self, menu_item, category, sub_i, sub, toggle, row_i) -> Entry:
        page = self.page
        self._open(menu_item, sub_i, toggle)
        header = [t.strip() for t in page.locator(f"{PANEL} table thead th").all_text_contents()]
        row = page.locator(f"{PANEL} table tbody > tr").nth(row_i)
        cells = [t.strip() for t in row.locator("td").all_text_contents()]
        columns = dict(zip(header, cells))  # the last (actions) column has no header text
        columns.pop("", None)
        eye, info = row.locator("td:last-child a").nth(0), row.locator("td:last-child a").nth(1)

        href = eye.get_attribute("href") or ""
        download = eye.get_attribute("download")
        if download is not None:
            entry = Entry(category, sub, columns, toggle, "download", _mime(href), download_name=download)
        else:
            eye.click()
            # The app's state says what it is showing; the DOM checks below measure it.
            page.wait_for_function("() => ['img', 'html', 'pdf'].includes(app.state.content)")
            content, uri = page.evaluate("() => [app.state.content, app.state.contentPath]")
            kind = "image" if content == "img" else content
            entry = Entry(category, sub, columns, toggle, kind, _mime(uri))
            if kind == "image":
                self._read_image(entry, uri)
            else:
                self._read_frame(entry, uri)

        info.click()
        self._wait_mode("resultinfo")
        self._settle()
        entry.path = page.locator(f"{CRUMBS}.grow").inner_text().strip()
        sections = page.evaluate(f"""() => {{
            const out = {{}}; let head = null;
            for (const li of document.querySelector('{PANEL} > ul').children) {{
                if (li.classList.contains('uppercase') && li.classList.contains('font-bold')) {{
                    head = li.textContent.trim().toLowerCase(); out[head] = {{text: '', html: ''}};
                }} else if (head !== null) {{
                    out[head].text += li.innerText.trim(); out[head].html += li.innerHTML;
                }}
            }}
            return out;
        }}""")
        entry.info = {k: v["text"] for k, v in sections.items()}
        entry.caption = sections.get("description", {}).get("text", "")
        entry.caption_html = sections.get("description", {}).get("html", "")
        entry.info_screenshot = self._shot(f"{entry.path}-info")
        return entry

    def _read_image(self, entry: Entry, uri: str):
        img = self.page.locator(f"{CONTENT} img")
        img.wait_for(state="attached")  # a broken image may have no box: not "visible"
        self.page.wait_for_function(
            f"src => document.querySelector('{CONTENT} img').getAttribute('src') === src", arg=uri)
        state = img.evaluate("""async img => {
            try { await img.decode(); } catch (e) {}
            const r = img.getBoundingClientRect();
            return {complete: img.complete, w: img.naturalWidth, h: img.naturalHeight, shown: r.width};
        }""")
        entry.image_loaded = bool(state["complete"] and state["w"] > 0)
        entry.natural_width, entry.natural_height = state["w"], state["h"]
        entry.shown_width = state["shown"]
        self._settle()
        entry.screenshot = self._shot(_entry_slug(entry, "view"))

    def _read_frame(self, entry: Entry, uri: str):
        page = self.page
        page.wait_for_function(
            f"src => document.querySelector('{CONTENT} iframe')?.getAttribute('src') === src", arg=uri)
        iframe = page.locator(f"{CONTENT} iframe")
        box = iframe.bounding_box() or {"width": 0, "height": 0}
        entry.frame_width, entry.frame_height = box["width"], box["height"]
        frame = iframe.element_handle().content_frame()
        if frame is not None and entry.kind == "html":
            # The frame may still be on about:blank: wait for the data: document itself.
            frame.wait_for_function(
                "() => location.protocol === 'data:' && document.readyState === 'complete'")
            got = frame.evaluate("""() => ({
                text: (document.body ? document.body.innerText : '').slice(0, 5000),
                tables: [...document.querySelectorAll('table')].map(t => {
                    const cells = r => [...r.cells].map(c => c.innerText.trim());
                    const head = t.tHead ? [...t.tHead.rows] : [];
                    let body = [...t.rows].filter(r => !head.includes(r));
                    if (!head.length && body.length && [...body[0].cells].every(c => c.tagName === 'TH'))
                        head.push(body.shift());
                    const box = t.getBoundingClientRect();
                    return {header_rows: head.map(cells), rows: body.map(cells),
                            width: box.width, height: box.height};
                }),
            })""")
            entry.text = got["text"]
            entry.tables = [TableView(header=(t["header_rows"] or [[]])[0], rows=t["rows"],
                                      header_rows=t["header_rows"], width=t["width"], height=t["height"])
                            for t in got["tables"]]
        self._settle()
        entry.screenshot = self._shot(_entry_slug(entry, "view"))

    # -- reading -------------------------------------------------------------------------------
    def _menu(self) -> list[tuple[int, str | None, str]]:
        """(index among the <li>s, heading above it, text) of each item of the start menu."""
        return [tuple(x) for x in self.page.evaluate(f"""() => {{
            const out = []; let head = null;
            [...document.querySelector('{PANEL} > ul').children].forEach((li, i) => {{
                const a = li.querySelector(':scope > a');
                if (a) out.push([i, head, a.textContent.trim()]); else head = li.textContent.trim();
            }});
            return out;
        }}""")]

    def _panel_items(self) -> list[str]:
        return [t.strip() for t in self.page.locator(f"{PANEL} > ul > li > a").all_text_contents()]

    def _category_name(self, menu_text: str) -> str:
        """The category's name: the menu item, or the breadcrumb behind a lone "Results" item."""
        # Breadcrumb texts: the home icon, the separators and the search box have none.
        crumbs = [t.strip() for t in self.page.locator(CRUMBS).all_text_contents() if t.strip()]
        if crumbs and crumbs[0] == "Results" and len(crumbs) > 1:
            return crumbs[1]
        return crumbs[0] if crumbs else menu_text

    def _mode(self) -> str:
        return self.page.evaluate("() => app.state.navbarMode")

    def _wait_mode(self, mode: str):
        self.page.wait_for_function("m => app.state.navbarMode === m", arg=mode)

    def _settle(self):
        # The report styles itself with Tailwind's in-page compiler, which restyles on DOM
        # mutations: give it two frames before looking or taking a screenshot.
        self.page.evaluate(_TWO_FRAMES)

    def _shot(self, name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "shot"
        path = self.shots_dir / f"{len(self.shots):02d}-{slug}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)
        return path


def _entry_slug(entry: Entry, what: str) -> str:
    return "-".join([entry.category, entry.subcategory or "", *entry.columns.values(),
                     *entry.toggle.values(), what])


def _mime(data_uri: str) -> str:
    return data_uri[5:].split(";", 1)[0] if data_uri.startswith("data:") else ""


# -- one standalone page (a report page opened as a file) ---------------------------------------

@dataclass
class PageSession:
    """A page open in headless chromium: the Playwright page, every request it made (the page's
    own file:// load included) and any that left the machine, which are blocked, not served."""

    page: object
    requests: list[str]
    blocked: list[str]
    console_errors: list[str]


def open_page(path: Path, *, executable: str | None = None, viewport: tuple[int, int] = (1400, 900),
              timeout_ms: int = 15_000):
    """Open the page at `path` in headless chromium at `viewport`; a context manager yielding a
    PageSession. Any request other than file: and data:
    is recorded in `blocked` and aborted, so a page that needs the network shows it."""
    import contextlib

    @contextlib.contextmanager
    def session():
        os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        from playwright.sync_api import sync_playwright

        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("no chromium on PATH (tools/install-chromium.sh installs it)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.set_default_timeout(timeout_ms)
                out = PageSession(page, [], [], [])
                page.on("request", lambda r: out.requests.append(r.url))
                page.on("console", lambda m: m.type == "error" and out.console_errors.append(m.text[:500]))
                page.on("pageerror", lambda exc: out.console_errors.append(f"uncaught: {exc}"[:500]))

                def route(r):
                    if r.request.url.startswith(("file:", "data:")):
                        r.continue_()
                    else:
                        out.blocked.append(r.request.url)
                        r.abort()

                page.context.route("**/*", route)
                page.goto(Path(path).resolve().as_uri())
                page.wait_for_load_state("load")
                yield out
            finally:
                browser.close()

    return session()
