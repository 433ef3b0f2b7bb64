"""Tests of proxy.core.report: the rows it builds, and the page driven in a real headless
Chromium."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.core.cassette import Cassette, load, new_header
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.core.report import CHROMIUM_ARGS, render_html, rows
from proxy.wire.store import CassetteWriter

CASSETTES = Path(__file__).parent.parent / "cassettes"
CHROMIUM = Path("/usr/bin/chromium")


def annotated_cassette(path: Path) -> Cassette:
    """A cassette where rules acted: a drop, a local reply, a patch, a hidden injected answer."""
    writer = CassetteWriter(path, new_header("ws://127.0.0.1:1"), overwrite=True)
    clock = [0.0]
    recorder = Recorder(writer, clock=lambda: clock[0])
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://127.0.0.1:1/")

    def text(direction: Direction, frame: bytes, **extra: object) -> None:
        clock[0] += 0.010
        parsed, response_to = recorder.inspect(conn, direction, frame)
        _, line = recorder.text_line(conn, direction, frame, parsed, response_to, dict(extra))
        recorder.write([line])

    drop = [{"rule": "quiet", "action": "drop"}]
    text(Direction.C2S, b'{"method":"noise"}', rules=drop, forwarded=False)
    reply = [{"rule": "fake-models", "action": "reply"}]
    text(Direction.C2S, b'{"id":1,"method":"model/list"}', rules=reply, forwarded=False)
    text(Direction.S2C, b'{"id":1,"result":{"data":[]}}', origin="rpctape", rule="fake-models")
    patch = [{"rule": "rename", "action": "patch"}]
    text(
        Direction.C2S,
        b'{"id":2,"method":"thread/start","params":{}}',
        rules=patch,
        delivered={"id": 2, "method": "thread/start", "params": {"x": 1}},
    )
    text(Direction.C2S, b'{"id":"rpctape-1","method":"account/read"}', origin="rpctape", rule="ask")
    text(
        Direction.S2C,
        b'{"id":"rpctape-1","error":{"code":-1,"message":"no"}}',
        hidden=True,
        forwarded=False,
    )
    text(Direction.S2C, b'{"id":2,"result":{"thread":{"id":"t"}}}')
    recorder.close(conn, by="server", code=1006, reason="dropped")
    writer.close()
    return load(path)


def test_rows_pair_requests_and_show_rule_effects(tmp_path: Path) -> None:
    """Lanes, effects and request/response links of a cassette where rules acted."""
    got = rows(annotated_cassette(tmp_path / "a.jsonl").events)
    summary = [(r["seq"], r.get("src"), r.get("dst"), r.get("effects"), r.get("pair")) for r in got]
    assert summary == [
        (1, None, None, None, None),
        (2, "client", "rpctape", ["dropped"], None),
        (3, "client", "rpctape", ["replied"], 4),
        (4, "rpctape", "client", ["sent by rpctape (fake-models)"], 3),
        (5, "client", "server", ["patched"], 8),
        (6, "rpctape", "server", ["sent by rpctape (ask)"], 7),
        (7, "server", "rpctape", ["hidden"], 6),
        (8, "server", "client", [], 5),
        (9, None, None, None, None),
    ]
    assert got[2]["latency_ms"] == got[3]["latency_ms"] == 10.0
    assert got[4]["delivered"] == '{"id":2,"method":"thread/start","params":{"x":1}}'
    assert got[6]["error"] is True
    assert got[8]["label"] == "close by server 1006 dropped"


def test_page_is_self_contained_and_escapes_script(tmp_path: Path) -> None:
    """No external reference, and `</script>` inside a frame cannot end the data block."""
    tape = annotated_cassette(tmp_path / "a.jsonl")
    tape.events[1]["msg"] = {"method": "</script><script>window.pwned=1</script>"}
    page = render_html(tape, "a <b>")
    assert page.count("</script>") == 3  # the two data blocks and the code, nothing else
    assert "<title>a &lt;b&gt;</title>" in page
    for reference in ("http://", "https://", "src=", "@import", "url("):
        assert reference not in page.split("<script>")[-1].split("</style>")[0]
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow.pwned=1" in page


# -- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium, driven by Playwright (skips locally without it, fails in CI)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: no {CHROMIUM} (./dev setup installs it)")
        pytest.skip(f"no {CHROMIUM}: `./dev setup` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Report:
    """One report opened in a page: what the tests look at."""

    def __init__(self, browser: object, html_path: Path) -> None:
        from playwright.sync_api import Browser

        assert isinstance(browser, Browser)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(html_path.as_uri())
        self.page.wait_for_selector("body[data-ready=true]")

    def seqs(self) -> list[int]:
        return [
            int(s)
            for s in self.page.eval_on_selector_all(".row", "rows => rows.map(r => r.dataset.seq)")
        ]

    def count(self) -> str:
        return self.page.text_content("#count") or ""


def open_report(browser: object, tape: Cassette, tmp_path: Path) -> Report:
    path = tmp_path / "report.html"
    path.write_text(render_html(tape, "test"))
    return Report(browser, path)


def test_browser_rows_link_and_json(browser: object, tmp_path: Path) -> None:
    """A real cassette: one row per event, the approval linked to its answer, JSON expanded."""
    tape = load(CASSETTES / "command-approval.jsonl")
    report = open_report(browser, tape, tmp_path)
    assert report.seqs() == [e["seq"] for e in tape.events]
    assert report.count() == f"{len(tape.events)} of {len(tape.events)} rows"
    approval = next(e for e in tape.events if e.get("method", "").endswith("requestApproval"))
    answer = next(e for e in tape.events if e.get("response_to") == approval["method"])
    row = report.page.locator(f'.row[data-seq="{approval["seq"]}"]')
    assert "server-request" in (row.get_attribute("class") or "")
    row.locator("a.pair").click()
    selected = report.page.locator(".row.selected")
    assert selected.get_attribute("data-seq") == str(answer["seq"])
    shown = report.page.text_content("#detail-json") or ""
    assert json.loads(shown) == answer["msg"]
    assert shown == json.dumps(answer["msg"], indent=2, ensure_ascii=False)
    assert report.requests == [(tmp_path / "report.html").as_uri()]  # no network at all
    assert report.errors == []
    report.page.close()


def test_browser_filters_and_search(browser: object, tmp_path: Path) -> None:
    """Method, direction and connection filters and the search box narrow the rows."""
    tape = load(CASSETTES / "two-turns.jsonl")
    report = open_report(browser, tape, tmp_path)
    total = len(tape.events)
    report.page.select_option("#f-method", "turn/start")
    turn_starts = [
        e["seq"] for e in tape.events if "turn/start" in (e.get("method"), e.get("response_to"))
    ]
    assert len(turn_starts) == 4
    assert report.seqs() == turn_starts
    assert report.count() == f"4 of {total} rows"
    report.page.select_option("#f-dir", "c2s")
    assert report.seqs() == [s for s in turn_starts if tape.events[s - 1]["dir"] == "c2s"]
    report.page.select_option("#f-method", "")
    report.page.select_option("#f-dir", "s2c")
    assert report.seqs() == [e["seq"] for e in tape.events if e.get("dir") == "s2c"]
    report.page.select_option("#f-dir", "other")
    assert report.seqs() == [e["seq"] for e in tape.events if "dir" not in e]
    report.page.select_option("#f-dir", "")
    report.page.select_option("#f-conn", "1")
    assert len(report.seqs()) == total
    report.page.select_option("#f-conn", "")
    needle = "Second"
    report.page.fill("#search", needle)
    expected = [
        e["seq"]
        for e in tape.events
        if e["kind"] == "text" and needle.lower() in json.dumps(e["msg"]).lower()
    ]
    assert expected and report.seqs() == expected
    report.page.fill("#search", "no such text anywhere")
    assert report.seqs() == []
    assert report.count() == f"0 of {total} rows"
    report.page.close()


def test_browser_shows_rule_effects_and_survives_script_tags(
    browser: object, tmp_path: Path
) -> None:
    """What rules did is on the rows; a `</script>` inside a frame is shown as text."""
    tape = annotated_cassette(tmp_path / "a.jsonl")
    tape.events[1]["msg"] = {"method": "</script><script>window.pwned=1</script>"}
    report = open_report(browser, tape, tmp_path)
    assert report.seqs() == list(range(1, 10))
    badges = report.page.eval_on_selector_all(
        ".row .badge", "bs => bs.map(b => b.closest('.row').dataset.seq + ':' + b.textContent)"
    )
    assert badges == [
        "2:dropped",
        "3:replied",
        "4:sent by rpctape (fake-models)",
        "5:patched",
        "6:sent by rpctape (ask)",
        "7:error",
        "7:hidden",
    ]
    assert report.page.locator(".row.stopped").count() == 3
    assert report.page.evaluate("window.pwned") is None
    report.page.locator('.row[data-seq="2"]').click()
    assert "window.pwned=1" in (report.page.text_content("#detail-json") or "")
    report.page.locator('.row[data-seq="5"]').click()
    assert '"x": 1' in (report.page.text_content("#detail") or "")
    assert report.errors == []
    report.page.close()


def test_browser_ten_thousand_frames_stay_light(browser: object, tmp_path: Path) -> None:
    """10,000 frames: the page draws only the rows in view, scrolls to the end, and searches."""
    path = tmp_path / "big.jsonl"
    writer = CassetteWriter(path, new_header("ws://127.0.0.1:1"))
    clock = [0.0]
    recorder = Recorder(writer, clock=lambda: clock[0])
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://127.0.0.1:1/")
    for n in range(5000):
        clock[0] += 0.001
        recorder.text(conn, Direction.C2S, b'{"id":%d,"method":"ping"}' % n)
        recorder.text(conn, Direction.S2C, b'{"id":%d,"result":{"n":%d}}' % (n, n))
    writer.close()
    tape = load(path)
    assert len(tape.frames()) == 10_000
    report = open_report(browser, tape, tmp_path)
    assert report.count() == "10001 of 10001 rows"
    assert len(report.seqs()) < 120
    report.page.evaluate("document.getElementById('viewport').scrollTop = 1e9")
    report.page.wait_for_selector('.row[data-seq="10001"]')
    assert len(report.seqs()) < 120
    report.page.fill("#search", '"n":4999}')
    assert report.seqs() == [10001]
    report.page.close()
