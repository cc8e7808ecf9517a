"""Screenshots of each `caikit view` page for docs/view.md, taken by hand in headless Chromium.

    python examples/view_screenshots.py [RUN_DIR] [OUT_DIR]     # defaults: runs/quickstart docs/img

It starts `caikit view RUN_DIR` and `caikit view --annotate RUN_DIR/labels.jsonl` as a user would
(the real CLI, each on a free port), opens every view and saves one PNG per view. Needs selenium
and Debian's chromium + chromium-driver (`make browser` installs them where it runs as root).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import WebDriverWait

CAIKIT = Path(sys.executable).with_name("caikit")


@contextmanager
def viewing(*args: str):
    """Run `caikit view ARGS --port 0` and yield its URL (printed on stderr) until the block ends."""
    process = subprocess.Popen([str(CAIKIT), "view", *args, "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if found := re.search(r"(http://\S+?)(/\S*)?\s+\(Ctrl-C", line):
                break
        else:
            raise SystemExit(f"caikit view {' '.join(args)} did not start")
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--hide-scrollbars"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def file_link(driver, name: str) -> str:
    return driver.find_element("link text", name).get_attribute("href")


def main(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    driver = chromium()
    shots = []

    def shot(name: str) -> None:
        driver.save_screenshot(str(out / f"view-{name}.png"))
        shots.append(out / f"view-{name}.png")

    try:
        with viewing(str(run)) as url:
            driver.get(url + "/")
            shot("home")
            home = url + "/"
            judgments = next((n for n in ("judgments.jsonl", "eval/judgments.jsonl") if (run / n).is_file()), "judgments.jsonl")
            for name, view, where in [("redteam.jsonl", "redteam", ""), ("sl.jsonl", "revise", ""),
                                      ("labels.jsonl", "label", "label>0.5"), (judgments, "judgments", "")]:
                driver.get(home)
                target = file_link(driver, name)
                driver.get(target + (f"?where={where}" if where else ""))
                WebDriverWait(driver, 30).until(lambda d: "match" in d.find_element("css selector", "p.status").text
                                                or "lines" in d.find_element("css selector", "p.status").text)
                shot(view)
            driver.get(home)
            reports = driver.find_elements("partial link text", "report.md")
            if reports:
                driver.get(reports[0].get_attribute("href"))
                shot("report")
        with tempfile.TemporaryDirectory() as scratch, viewing("--annotate", str(run / "labels.jsonl"), "-o", f"{scratch}/human.jsonl",
                                                              "--annotator", "docs") as url:
            driver.get(url + "/annotate")
            shot("annotate")
            form = driver.find_element("id", "answer")
            ActionChains(driver).send_keys("a").perform()
            WebDriverWait(driver, 10).until(lambda d: form not in d.find_elements("id", "answer"))
            shot("annotate-answered")
    finally:
        driver.quit()
    for path in shots:
        print(path, f"{path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(Path(arguments[0] if arguments else "runs/quickstart"), Path(arguments[1] if len(arguments) > 1 else "docs/img"))
