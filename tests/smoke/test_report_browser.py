"""The reports as a person sees them: tiny scores artifacts rendered by headless Chromium (Debian's `chromium`, which
`.ci/run` installs), asserting that the headline comes first, the chart has its bars and every picture decodes.

The pages hold no script; the test appends one to a copy, run on load, that writes what the browser laid out into the
DOM, and `--dump-dom` prints it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from vltk.metrics.report import ATTRIBUTES, BAR

from tests.factories import copy_build
from tests.helpers import needs_java, run_cli

pytestmark = [pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="needs Debian's chromium on PATH (.ci/run installs it)"),
              needs_java]  # the i2t scores' caption metrics
PROBE = """<script>addEventListener("load", () => {
  const top = selector => document.querySelector(selector)?.getBoundingClientRect().top ?? null;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: [...document.images].map(img => img.complete ? img.naturalWidth : -1),
    bars: [...document.querySelectorAll("svg.chart rect.bar")].map(bar => bar.getBBox().width),
    headline: document.querySelector(".headline")?.innerText ?? "", headline_top: top(".headline"),
    table_top: top("table"), screen: innerHeight});
  document.body.append(probe);
});</script>"""


@pytest.fixture(scope="module")
def scores(tiny_magvlt, tmp_path_factory):
    """Scores of re-ranked t2i samples and of i2t samples from a generator trained 2 steps."""
    root = copy_build(tiny_magvlt, tmp_path_factory.mktemp("report-browser"))
    run_cli("sample", root / "gen", root / "t2i", "--count", 4, "--candidates", 2, "--cpu")
    run_cli("sample", root / "gen", root / "i2t", "--task", "i2t", "--count", 4, "--cpu")
    for task in ("t2i", "i2t"):
        run_cli("score", root / task, root / f"scores-{task}", "--no-meteor")
    return root


def rendered(page, tmp_path) -> dict:
    """What Chromium laid out of `page` (a 1200 x 900 window), read by PROBE."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", "--virtual-time-budget=5000",
               "--dump-dom", probed.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no probe (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found[1]))


@pytest.mark.parametrize("task", ["t2i", "i2t"])
def test_a_browser_shows_the_headline_first_the_chart_and_every_picture(scores, task, tmp_path):
    metrics = json.loads((scores / f"scores-{task}" / "metrics.json").read_text())
    page = rendered(scores / f"scores-{task}" / "report.html", tmp_path)
    # Every picture inlined decodes: each sample (and candidate 0), the grid, the loss curves.
    assert len(page["images"]) >= metrics["count"] + 2 and all(width > 0 for width in page["images"])
    # The headline is on the first screen, above every table.
    assert page["headline_top"] < page["screen"] / 2 and page["headline_top"] < page["table_top"]
    if task == "t2i":
        judge = metrics["judge"]
        assert "Judge: whole caption right" in page["headline"] and "Judge, without re-ranking" in page["headline"]
        assert f"{judge['all']['whole']:.1%}" in page["headline"] and "unavailable" in page["headline"]
        groups = [name for name in ("all", "seen", "heldout") if name in judge]
        assert len(page["bars"]) == len(ATTRIBUTES) * len(groups)
        assert page["bars"] == pytest.approx([judge[g][a] * BAR for a in ATTRIBUTES for g in groups], abs=0.1)
    else:
        assert f"{metrics['captions']['CIDEr']:.3f}" in page["headline"] and "CIDEr" in page["headline"]
        assert "BLEU-4" in page["headline"]
