"""The HTML report in a real headless browser (Debian's chromium): it renders its plots and loads nothing.

Chromium resolves no host names here (``--host-resolver-rules="MAP * ~NOTFOUND"``) and logs every
request to a net log. Requests of the browser itself (component updates and the like) carry the
initiator ``"not an origin"``; every request the page makes carries the page's origin. The test
asserts that the page requests nothing but ``file:``/``data:`` URLs, and a negative control shows
that an external reference would be caught.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eval_rundirs import make_run, make_sweep
from PIL import Image

from evaluations.report import write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=5000",
]
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    out.push({complete: im.complete, w: im.naturalWidth, h: im.naturalHeight});
  }
  var pre = document.createElement('pre');
  pre.id = 'imgcheck';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _net_log(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit: close the event list
        return json.loads(text.rstrip(",") + "]}")


def _page_requests(log: dict[str, Any]) -> list[str]:
    """URLs of requests started on behalf of the page (not by the browser itself)."""
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if types.get(event.get("type")) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        browser_own = params.get("initiator") == "not an origin" and "file://" not in str(
            params.get("network_isolation_key", "")
        )
        if not browser_own:
            urls.append(str(params["url"]))
    return urls


def _chromium(page: Path, work: Path, *extra: str) -> tuple[str, list[str]]:
    assert CHROMIUM is not None
    net = work / f"net-{page.stem}-{len(list(work.glob('net-*')))}.json"
    cmd = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--log-net-log={net}",
        *extra,
        page.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert net.is_file(), "chromium wrote no net log"
    return res.stdout, _page_requests(_net_log(net))


def _external(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:"))]


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_report_renders_its_plots_and_requests_nothing(tmp_path: Path, kind: str) -> None:
    folder = make_run(tmp_path) if kind == "run" else make_sweep(tmp_path)
    report = write_report(path=folder).html
    page = report.read_text(encoding="utf-8")
    sizes = []
    for uri in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(uri))) as png:
            sizes.append(png.size)
    n_img = page.count("<img ")
    assert n_img == len(sizes) == (5 if kind == "run" else 3)
    check = report.with_name("report_check.html")
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "\n</body>"), encoding="utf-8")
    work = tmp_path / "chromium"
    work.mkdir()

    dom, requests = _chromium(check, work, "--dump-dom")
    found = re.search(r'<pre id="imgcheck">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading in chromium"
    images = json.loads(html.unescape(found.group(1)))
    assert len(images) == n_img
    assert all(im["complete"] for im in images), images
    assert [(im["w"], im["h"]) for im in images] == sizes  # every plot decoded at its own size
    assert not _external(requests), f"the report requested {_external(requests)}"

    shot = work / "shot.png"
    _, requests = _chromium(report, work, f"--screenshot={shot}", "--window-size=1100,2400")
    assert not _external(requests), f"the report requested {_external(requests)}"
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        dark = sum(gray.histogram()[:200])
    assert lo < 100 < hi and dark > 2000, "the screenshot is blank"


def test_network_check_catches_an_external_reference(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://example.com/a.png">'
        '<link rel="stylesheet" href="https://cdn.example.org/x.css"></body></html>',
        encoding="utf-8",
    )
    work = tmp_path / "chromium"
    work.mkdir()
    _, requests = _chromium(page, work, "--dump-dom")
    assert set(_external(requests)) >= {"http://example.com/a.png", "https://cdn.example.org/x.css"}
