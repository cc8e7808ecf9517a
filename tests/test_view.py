"""caikit view: each record shape in the browser's HTML, filters and paging over a byte-offset index,
escaping, human labels (written, resumed, read by eval labeler, label --check-human and train-pm),
the exported page, and the whole thing in a real headless browser."""

from __future__ import annotations

import gzip
import json
import re
import shutil

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from caikit import calibration, inputs
from caikit.cli import app as cli
from caikit.viewer.annotate import Annotation
from caikit.viewer.app import create_app
from caikit.viewer.index import LineIndex
from caikit.viewer.sources import Sources

EVIL = "<script>alert(1)</script> </textarea><b>bold</b>"


def write(path, rows, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def user(text):
    return [{"role": "user", "content": text}]


def said(text):
    return [{"role": "assistant", "content": text}]


def quickstart_run(root, n=45):
    """A run directory shaped like `make quickstart`'s: each stage's records, an eval dir."""
    run = root / "run"
    write(run / "redteam.jsonl", [{"id": f"{i:016x}", "prompt": user(f"red-team prompt {i} {EVIL}"), "completion": said(f"answer {i} {EVIL}"),
                                   "caikit": {"stage": "redteam", "model": "tiny", "seed": 1}} for i in range(n)], tail="{not json\n")
    write(run / "sl.jsonl", [{
        "id": f"{i:016x}", "prompt": user(f"prompt {i}"), "initial": said("Sure, use a tension wrench and a pick."),
        "revisions": [{"round": 1, "principle_id": "illegal" if i % 2 else "tactful", "critique": f"It helps with a crime {EVIL}",
                       "revision": "I can't help you open locks that aren't yours."},
                      {"round": 2, "principle_id": "harmless", "critique": "Better.", "revision": "no", "failed": True}],
        "completion": said("I can't help you open locks that aren't yours."),
        "caikit": {"stage": "revise", "principle_ids": ["illegal" if i % 2 else "tactful", "harmless"]}} for i in range(6)])
    write(run / "labels.jsonl", [{
        "id": f"{i:016x}-0-1", "prompt": user(f"Question {i}?"), "chosen": said(f"GOOD answer {i}."), "rejected": said(f"bad answer {i}."),
        "label": 0.8, "p_a": 0.8, "principles": [{"id": "harmless", "p_first_order": 0.75, "p_second_order": 0.85, "p": 0.8,
                                                   "reasoning": [f"Thinking {EVIL}"]}],
        "caikit": {"stage": "label", "principle_ids": ["harmless"]}} for i in range(8)])
    answers = {"base": "Here is how.", "sl-cai": "I won't help with that."}
    for name, text in answers.items():
        write(run / "eval" / "responses" / f"{name}.red_team.jsonl",
              [{"id": f"{i:016x}", "prompt": user(f"eval prompt {i}"), "completion": said(f"{text} {i} {EVIL}")} for i in range(3)])
    write(run / "eval" / "judgments.jsonl", [{"id": f"j{i}", "set": "red_team", "prompt_id": f"{i:016x}", "first": "base", "second": "sl-cai",
                                              "principle_id": "harmless", "judge": "tiny", "p_first": 0.25} for i in range(3)])
    (run / "eval" / "report.md").write_text(f"# caikit eval compare\n\n| model | elo |\n|---|---|\n| sl-cai {EVIL} | 12 |\n\n![elo](elo_pm.png)\n")
    png(run / "eval" / "elo_pm.png")
    return run


def png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture
def run(tmp_path):
    return quickstart_run(tmp_path)


def client(paths, annotation=None):
    return TestClient(create_app(Sources([str(p) for p in paths]), annotation))


def number_of(sources, name):
    return [s.name for s in sources.files].index(name)


def test_each_record_shape_has_its_view_and_every_text_is_escaped(run):
    sources = Sources([str(run)])
    web = TestClient(create_app(sources))
    pages = {name: web.get(f"/f/{number_of(sources, name)}").text for name in ("redteam.jsonl", "sl.jsonl", "labels.jsonl", "eval/judgments.jsonl")}
    for name, html in pages.items():
        assert "<script>alert" not in html and "</textarea><b>" not in html, name
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;/textarea&gt;&lt;b&gt;bold&lt;/b&gt;" in pages["redteam.jsonl"]
    assert "answer 0" in pages["redteam.jsonl"]
    revise = pages["sl.jsonl"]
    assert "<del>Sure, use a tension wrench and a pick.</del><ins>I can&#39;t help you open locks that aren&#39;t yours.</ins>" in revise
    assert "round 2" in revise and "<b>failed</b>" in revise and "It helps with a crime &lt;script&gt;" in revise
    label = pages["labels.jsonl"]
    assert "GOOD answer 0." in label and "bad answer 0." in label and "<b>0.800</b>" in label
    assert "<td>0.750</td><td>0.850</td><td>0.800</td>" in label and "chain of thought 1" in label and "Thinking &lt;script&gt;" in label
    judged = pages["eval/judgments.jsonl"]
    assert "Here is how. 0" in judged and "I won&#39;t help with that. 0" in judged and "eval prompt 0" in judged
    assert "p(base better than sl-cai) <b>0.250</b>" in judged and "every judgment on this prompt" in judged
    report = web.get("/report/0")
    assert "<table>" in report.text and "sl-cai &lt;script&gt;" in report.text and 'src="/asset/0/elo_pm.png"' in report.text
    assert web.get("/asset/0/elo_pm.png").content[:4] == b"\x89PNG"
    assert web.get("/asset/0/..%2Fsl.jsonl").status_code == 404
    csp = web.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert web.get("/", headers={"host": "attacker.example"}).status_code == 400  # no DNS rebinding


def test_filters_facets_and_paging(run):
    sources = Sources([str(run)])
    web = TestClient(create_app(sources))
    red, sl = number_of(sources, "redteam.jsonl"), number_of(sources, "sl.jsonl")
    first = web.get(f"/f/{red}").text
    assert "46 lines" in first and "page 1 of 3" in first
    assert first.count('class="record answer"') == 20 and "next →" in first
    last = web.get(f"/f/{red}?page=3").text  # the line that is not a record is an error row, in its place
    assert last.count('class="record answer"') == 5 and "next →" not in last and "answer 44 " in last
    assert 'class="record error"' in last and "line 46: invalid JSON" in last and "1 line is not a record" in last
    found = web.get(f"/f/{red}", params={"q": "ANSWER 4"}).text  # any string value, case-insensitive
    assert "6 of 46 lines match" in found
    assert "answer 4 " in found and "answer 40 " in found and "answer 14 " not in found
    where = web.get(f"/f/{red}", params={"where": ["caikit.seed=1", "prompt.0.content~prompt 1"]}).text  # 1, 10-19
    assert "11 of 46 lines match" in where
    illegal = web.get(f"/f/{sl}", params={"principle": "illegal"}).text
    assert "3 of 6 lines match" in illegal and 'href="/f/%d?principle=tactful' % sl in web.get(f"/f/{sl}").text
    bad = web.get(f"/f/{red}", params={"where": "label"})
    assert bad.status_code == 400 and "expected PATH=VALUE" in bad.text
    one = web.get(f"/f/{red}/44").text
    assert "record 45 of 46 (line 45)" in one and "answer 44 " in one
    assert web.get(f"/f/{red}/46").status_code == 404 and web.get("/f/99").status_code == 404


def test_the_index_holds_offsets_not_records_and_reads_gzip(tmp_path):
    rows = [{"id": f"{i:016x}", "prompt": user(f"p{i}"), "completion": said("x" * (i % 50))} for i in range(20_000)]
    path = write(tmp_path / "big.jsonl", rows[:10_000], tail="\n   \n" + "".join(json.dumps(r) + "\n" for r in rows[10_000:]))
    index = LineIndex(str(path))
    assert len(index) == 20_000 and index.offsets.itemsize == 8 and index.line(10_000) == 10_003  # the blank lines skipped
    assert index.record(12_345) == rows[12_345] and index.record(0) == rows[0]
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert LineIndex(str(gz)).record(19_999) == rows[19_999]


def choose_good(annotation: Annotation):
    """A human who prefers the answer that says GOOD: which side it was shown on."""
    pair = annotation.current
    left = pair[pair["left"]]
    return "left" if left.startswith("GOOD") else "right"


def test_labels_are_written_in_a_seeded_order_resumed_and_never_anchored(run, tmp_path):
    out = tmp_path / "human.jsonl"
    annotation = Annotation(str(run / "labels.jsonl"), str(out), annotator="ana", seed=3)
    web = TestClient(create_app(None, annotation))
    page = web.get("/annotate").text
    assert "0.800" not in page and "AI label" not in page, "the AI label is not shown before the human answers"
    sides = []
    for _ in range(3):
        pair = annotation.current
        sides.append(pair["left"])
        answer = web.post("/annotate", data={"id": pair["id"], "choice": choose_good(annotation)})
        assert answer.status_code == 200 and "AI label: p(your choice better) = <b>0.800</b>" in answer.text
    assert "Agreement with the file's labels so far: <b>1.00</b>" in answer.text and "3 of 3" in answer.text
    stale = web.post("/annotate", data={"id": pair["id"], "choice": "right"})  # the same form sent again
    assert stale.status_code == 200 and len(out.read_text().splitlines()) == 3
    web.post("/annotate", data={"id": annotation.current["id"], "choice": "skip"})
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["chosen"][0]["content"].startswith("GOOD") and r["label"] == 1.0 for r in records)
    assert {r["annotation"]["annotator"] for r in records} == {"ana"} and all(r["caikit"]["stage"] == "annotate" for r in records)
    assert [r["annotation"]["source"]["line"] for r in records] == [1, 2, 3]
    assert all(r["annotation"]["left"] == ("chosen" if side == "a" else "rejected") for r, side in zip(records, sides))
    again = Annotation(str(run / "labels.jsonl"), str(out), annotator="ana", seed=3)
    assert again.current["line"] == 5 and again.answers == 3 and again.skips == 1 and again.agreement()["n"] == 3
    orders = {Annotation(str(run / "labels.jsonl"), str(tmp_path / f"o{s}.jsonl"), annotator="x", seed=s).current["left"] for s in range(12)}
    assert orders == {"a", "b"}, "the side each answer is shown on is a seeded coin flip"
    with out.open("a") as f:
        f.write('{"id": "torn')  # a kill in mid-write
    assert Annotation(str(run / "labels.jsonl"), str(out), annotator="ana", seed=3).answers == 3
    assert out.read_text().endswith("}\n")


def test_human_labels_feed_eval_labeler_check_human_and_train_pm(run, tmp_path, fake_backend, tiny_model):
    from test_calibration import oracle

    out = tmp_path / "human.jsonl"
    annotation = Annotation(str(run / "labels.jsonl"), str(out), annotator="ana", seed=0)
    while annotation.current:
        annotation.answer(annotation.current["id"], choose_good(annotation))
    assert [p["human"] for p in calibration.human_pairs([str(out)], None, seed=0)].count(1) > 0
    fake_backend.scores = oracle
    result = CliRunner().invoke(cli, ["eval", "labeler", "-i", str(out), "--modes", "debiased", "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["modes"]["debiased"]["n"] == 8 and json.loads(result.stdout)["modes"]["debiased"]["agreement"] == 1.0
    todo = write(tmp_path / "todo.jsonl", [{"prompt": "Q?", "chosen": "GOOD a.", "rejected": "bad a."}])
    checked = CliRunner().invoke(cli, ["label", "-i", str(todo), "--check-human", str(out), "--min-agreement", "0.6", "-o", str(tmp_path / "l.jsonl")])
    assert checked.exit_code == 0, checked.stderr
    examples = list(inputs.iter_preferences(str(out)))
    assert len(examples) == 8 and all(e["label"] == 1.0 and e["chosen"][0]["content"].startswith("GOOD") for e in examples)
    trained = CliRunner().invoke(cli, ["train-pm", "-i", str(out), "-o", str(tmp_path / "pm"), "--base-model", str(tiny_model), "--max-steps", "1"])
    assert trained.exit_code == 0, trained.stderr


def test_export_is_one_self_contained_page_and_bad_flags_are_one_line(run, tmp_path):
    page = tmp_path / "share.html"
    result = CliRunner().invoke(cli, ["view", str(run / "redteam.jsonl"), str(run / "labels.jsonl"), "--where", "id~00000", "--limit", "5", "--export", str(page)])
    assert result.exit_code == 0, result.stderr
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and not re.search(r'(src|href)="https?:', html)
    assert html.count('class="record answer"') == 5 and html.count('class="record pair"') == 5 and "&lt;/textarea&gt;" in html
    for args, message in ((["view"], "give the files"), (["view", str(run), "--where", "nope"], "--where nope"),
                          (["view", "--annotate", str(run / "labels.jsonl")], "go together"),
                          (["view", "--annotate", str(run / "redteam.jsonl"), "-o", str(tmp_path / "h.jsonl")], "redteam.jsonl:1: not a pair"),
                          (["view", str(tmp_path / "missing")], "no such file")):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def browser():
    from test_verdicts import chromium

    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if chromium() is None or shutil.which("chromedriver") is None:
        pytest.skip("no chromium/chromedriver on this machine (make test installs Debian's where it runs as root with apt)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.binary_location = chromium()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def test_in_a_real_browser_a_filter_applies_and_three_key_presses_label_three_pairs(run, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from caikit.serving import Running

    out = tmp_path / "human.jsonl"
    annotation = Annotation(str(run / "labels.jsonl"), str(out), annotator="ana", seed=0)
    driver = browser()
    try:
        with Running(create_app(Sources([str(run)]), annotation)) as url:
            base = url.removesuffix("/v1")
            driver.get(base + "/")
            driver.find_element("link text", "redteam.jsonl").click()
            box = driver.find_element("css selector", "input[name=where][placeholder]")
            box.send_keys("prompt.0.content~prompt 1")
            box.submit()
            WebDriverWait(driver, 10).until(lambda d: "11 of 46 lines match" in d.find_element("css selector", "p.status").text)
            assert len(driver.find_elements("css selector", "section.record.answer")) == 11
            assert "<script>alert(1)</script>" in driver.find_element("css selector", "section.record .text").text  # shown as text
            driver.get(base + "/annotate")
            form = None
            for n in range(3):
                # the next pair's page, once it has replaced the last one (an element of a page being
                # replaced goes stale: read again until the new page holds still)
                form, left = WebDriverWait(driver, 10, ignored_exceptions=[StaleElementReferenceException]).until(
                    lambda d: next(((f, d.find_elements("css selector", ".pair .side .text")[0].text)
                                    for f in d.find_elements("id", "answer") if f != form), None))
                ActionChains(driver).send_keys("a" if left.startswith("GOOD") else "b").perform()
                WebDriverWait(driver, 10).until(lambda d: len(out.read_text().splitlines()) == n + 1 if out.exists() else False)
            WebDriverWait(driver, 10, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: "3 answered" in d.find_element("css selector", "p.status").text)
            assert "3 of 3" in driver.find_element("id", "agreement").text
            errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]  # a CSP violation would be one
            assert errors == []
    finally:
        driver.quit()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["chosen"][0]["content"].startswith("GOOD") for r in records)
