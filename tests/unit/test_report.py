"""The scores report's parts on hand-made metrics and verdicts: the headline, the chart, the verdict marks, escaping."""

from __future__ import annotations

import re

from PIL import Image

from vltk.metrics import report
from vltk.metrics.judge import Detection, Verdict, describe
from vltk.metrics.report import Figure


def groups(whole: float, n: int, parsed: float = 1.0) -> dict:
    return {"captions": n, "whole": whole, "parsed": parsed, "count": 0.9, "shape": 0.8, "color": 0.7, "size": 0.6,
            "position": 0.55}


T2I = {"task": "t2i", "generator": "magvlt", "count": 40,
       "judge": {"all": groups(0.2375, 40), "seen": groups(0.25, 30), "heldout": groups(0.2, 10)},
       "judge_first": {"all": groups(0.125, 40), "seen": groups(0.1333, 30), "heldout": groups(0.1, 10)},
       "images": {"FID": 31.4159, "IS": {"mean": 2.5, "std": 0.25}, "n": 40},
       "images_first": {"FID": 40.0, "IS": {"mean": 2.0, "std": 0.5}, "n": 40},
       "CLIP score": {"arch": "ViT-B-32-quickgelu", "image_vs_prompt": {"cosine": 0.2871, "clipscore": 28.71, "n": 40}}}
I2T = {"task": "i2t", "generator": "argvlt", "count": 8,
       "captions": {"BLEU-4": 0.4213, "CIDEr": 2.8812, "METEOR": None},
       "judge": {"all": groups(0.5, 8, parsed=0.75)}, "CLIP score": "unavailable: no clip_weights given"}


def test_t2i_headline_holds_the_metrics():
    lines = dict(report.headline(T2I))
    assert list(lines) == ["Judge: whole caption right", "Judge, without re-ranking", "Images", "CLIP score"]
    assert lines["Judge: whole caption right"] == [Figure("all", "23.8%", "40 captions"),
                                                   Figure("seen", "25.0%", "30 captions"),
                                                   Figure("held-out", "20.0%", "10 captions")]
    assert [f.value for f in lines["Judge, without re-ranking"]] == ["12.5%", "13.3%", "10.0%"]
    assert lines["Images"] == [Figure("FID", "31.42"), Figure("FID without re-ranking", "40.00"),
                               Figure("IS", "2.50", "± 0.25")]
    assert lines["CLIP score"] == [Figure("image vs prompt", "0.2871", "CLIPScore 28.71, n = 40")]
    page = report.headline_html(report.headline(T2I))
    assert re.findall(r'<div class="num">([^<]*)</div>', page)[:3] == ["23.8%", "25.0%", "20.0%"]


def test_i2t_headline_puts_caption_metrics_first_and_says_the_parse_rate():
    lines = report.headline(I2T)
    assert lines[0] == ("Captions vs references", [Figure("CIDEr", "2.881"), Figure("BLEU-4", "0.421")])
    assert lines[1] == ("Judge: whole caption right", [Figure("all", "50.0%", "8 captions"),
                                                       Figure("parsed", "75.0%", "captions in the shapes grammar")])
    assert lines[2] == ("CLIP score", [Figure("cosine", "unavailable", "no clip_weights given", number=False)])


def test_unavailable_is_a_word_never_a_number():
    metrics = {**T2I, "images": {"FID": "unavailable: the prompts were given by hand", "IS": "unavailable: 3 images"}}
    del metrics["images_first"]
    images = dict(report.headline(metrics))["Images"]
    assert images == [Figure("FID", "unavailable", "the prompts were given by hand", number=False),
                      Figure("IS", "unavailable", "3 images", number=False)]
    page = report.headline_html(report.headline({**metrics, "images": "unavailable: no inception_weights given"}))
    assert page.count('<div class="num na">unavailable</div>') == 2  # FID, IS
    assert "no inception_weights given" in page


def test_no_judge_outside_the_shapes_data():
    metrics = {**I2T, "judge": {"all": {**groups(0.0, 8), "parsed": 0.0}}}
    assert [title for title, _ in report.headline(metrics)] == ["Captions vs references", "CLIP score"]
    assert not report.judged(metrics["judge"])


def test_chart_has_a_bar_per_attribute_and_group_as_wide_as_its_share():
    svg = report.chart(T2I["judge"])
    bars = re.findall(r'<rect class="bar" data-group="(\w+)" data-attribute="(\w+)" [^>]*width="([\d.]+)"', svg)
    assert len(bars) == len(report.ATTRIBUTES) * 3
    for group, attribute, width in bars:
        assert float(width) == round(T2I["judge"][group][attribute] * report.BAR, 1)
    assert "23.8%" in svg and "held-out" in svg and "colour" in svg
    one_group = report.chart({"all": groups(0.5, 4)})
    assert one_group.count('class="bar"') == len(report.ATTRIBUTES)


def obj(shape, color, size, row, col) -> Detection:
    return Detection(shape=shape, color=color, size=size, row=row, col=col, extent=0.3, rgb=(0, 0, 0), misfit=0.1)


def marks(page: str) -> dict[str, str]:
    """{attribute: "✓" or "✗"} from the verdict's marks."""
    found = re.findall(r'<span class="mark (ok|bad)"><span aria-hidden="true">(.)</span> ([\w ]+)<span class="sr"> '
                       r"(right|wrong)</span>", page)
    assert all((css == "ok") == (sign == "✓") == (word == "right") for css, sign, _, word in found)
    return {name: sign for _, sign, name, _ in found}


def test_verdict_marks_each_attribute_and_says_what_the_judge_read():
    found = [obj("square", "blue", "small", 0, 0), obj(None, None, "large", 1, 1)]
    verdict = Verdict(caption="a small blue square above a large red circle", parsed=True, mentioned=2, found=2,
                      count=True, shape=0.5, color=0.5, size=1.0, position=1.0, correct=False)
    page = report.verdict_html((verdict, found))
    assert marks(page) == {"whole caption": "✗", "count": "✓", "shape": "✗", "colour": "✗", "size": "✓",
                           "position": "✓"}
    assert "shape<span class=\"sr\"> wrong</span> (1 of 2)" in page
    assert "read: 2 objects: small blue square top left, large unknown-colour blob bottom right" in page
    miscounted = Verdict("a small red circle in the top left", True, 1, 2, False, 1.0, 1.0, 1.0, 0.0, False)
    assert marks(report.verdict_html((miscounted, found)))["position"] == "✗"
    assert "(says 1, read 2)" in report.verdict_html((miscounted, found))
    unparsed = Verdict("a photo of a dog", False, 0, 0, False, 0.0, 0.0, 0.0, 0.0, False)
    assert marks(report.verdict_html((unparsed, []))) == {"not judged": "✗"}
    assert "read: no objects" in report.verdict_html((unparsed, []))
    assert describe([obj("circle", "red", "small", 0, 1)]) == "1 object: small red circle top right"


def test_hostile_captions_are_escaped(tmp_path):
    for name in ("grid.png", "0.png"):
        Image.new("RGB", (8, 8), "white").save(tmp_path / name)
    hostile = "<script>alert('x')</script> & a small red circle"
    rows = [{"index": 0, "file": "0.png", "prompt": hostile, "caption": None, "first_file": "0.png",
             "candidates": 2, "rerank": "<b>self</b>"}]
    verdict = Verdict(hostile, False, 0, 0, False, 0.0, 0.0, 0.0, 0.0, False)
    metrics = {**T2I, "generator": "<img src=x onerror=alert(1)>",
               "images": {"FID": "unavailable: <i>no</i> real images", "IS": {"mean": 2.5, "std": 0.25}}}
    report.write_report(tmp_path / "report.html", metrics, tmp_path, rows, [], [(verdict, [])])
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "<i>no</i>" not in page and "<b>self" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; a small red circle" in page
    # Everything is there, headline first and the full table below.
    order = [page.index(part) for part in ('class="headline"', "<svg", "not judged", "judge.all.whole")]
    assert order == sorted(order)
    assert page.count("data:image/png") == 3  # the kept image, candidate 0, the grid


def test_compare_headline_is_a_row_per_artifact():
    page = report.headline_table([("t2i: magvlt", report.headline(T2I)), ("i2t: argvlt", report.headline(I2T))])
    _, labels, *rows = page.split("</tr>")[:-1]  # the line titles, the figure labels, then a row per artifact
    assert [re.search(r"<tr><th>([^<]*)</th>", row)[1] for row in rows] == ["t2i: magvlt", "i2t: argvlt"]
    header = re.findall(r"<th>([^<]*)</th>", labels)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows]
    assert all(len(row) == len(header) for row in cells)
    t2i, i2t = ({label: cell for label, cell in reversed(list(zip(header, row)))} for row in cells)  # first of each
    assert t2i["all"] == "23.8%" and t2i["FID"] == "31.42" and t2i["CIDEr"] == ""
    assert i2t["all"] == "50.0%" and i2t["CIDEr"] == "2.881" and i2t["FID"] == ""


def test_compare_headline_drops_a_figure_no_row_has():
    page = report.headline_table([("t2i: magvlt", report.headline(T2I)), ("i2t: argvlt", report.headline(I2T))])
    assert "<th>cosine</th>" not in page  # CLIP score: a string in the one row that has it
    assert "Unavailable in every row: CLIP score cosine." in page
    assert "<th>FID</th>" in page  # one row's number keeps a column
