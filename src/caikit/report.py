"""The files `eval compare` writes for people: report.md (the verdict, then tables) and report.html
(the same, one self-contained file with the plots embedded); the plots are `caikit.plots`."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from caikit.plots import write_plots
from caikit.verdicts import SOURCES, p_value, validity, verdict, verdict_lines

__all__ = ["verdict", "write_plots", "report_markdown", "report_html", "write_reports"]


def _rate(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"


def source_rows(results: dict) -> list[str]:
    lines = ["## Sources of judgment", "", "| source | measured by | value | 95% CI | n | standing |", "|---|---|---|---|---|---|"]
    used = {s for sources in results["elo"].values() for s in sources}
    for source, standing in validity(results).items():
        if source not in used:
            continue
        if standing["status"] == "unmeasured":
            lines.append(f"| {SOURCES[source]} | – | – | – | – | unmeasured |")
        else:
            lo, hi = standing["ci95"]
            lines.append(f"| {SOURCES[source]} | {standing['what']} | {standing['value']:.3f} | {lo:.3f}–{hi:.3f} | {standing['n']} | "
                         f"{ {'evidence': 'evidence', 'chance': 'not evidence (chance)', 'below': 'not evidence (below chance)'}[standing['status']]} |")
    return lines + [""]


def elo_rows(kind: str, source: str, table: dict) -> list[str]:
    lines = [f"## {kind.capitalize()} Elo ({SOURCES[source]}, n={table['prompts']} prompts)", "", "| model | Elo | 95% CI |", "|---|---|---|"]
    lines += [f"| {n} | {t['elo']:.0f} | {t['ci95'][0]:.0f}–{t['ci95'][1]:.0f} |" for n, t in table["models"].items()]
    lines += ["", "| difference | Elo | 95% CI (uncorrected) | p | Holm p | significant (Holm) |", "|---|---|---|---|---|---|"]
    lines += [f"| {pair} | {d['diff']:+.0f} | {d['ci95'][0]:+.0f} to {d['ci95'][1]:+.0f} | {p_value(d['p'])} | {p_value(d['p_holm'])} | "
              f"{'yes' if d['significant'] else 'no'} |" for pair, d in table["differences"].items()]
    return lines + [""]


def absolute_rows(results: dict) -> list[str]:
    """Absolute scores as one model x measure table."""
    columns = {f"mean PM score ({kind})": values for kind, values in results["absolute"].get("mean_pm_score", {}).items()}
    if "judged_harmful_share" in results["absolute"]:
        columns["judged harmful share (judge)"] = results["absolute"]["judged_harmful_share"]
    if not columns:
        return []
    lines = ["## Absolute scores", "", "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_rate(values.get(name)) for values in columns.values()) + " |" for name in results["models"]]
    return lines + [""]


def over_refusal_rows(results: dict) -> list[str]:
    """Over-refusal, one row per model: safe-prompt refusal and unsafe-prompt compliance by phrases
    and by the judge, their agreement, and n."""
    if "over_refusal" not in results:
        return []
    lines = ["## Over-refusal (XSTest-style prompts)", ""]
    check = results.get("over_refusal_judge")
    if check and not check["usable"]:
        lines += [f"The judge is unusable for this measure ({check['why']}): read the phrase-based rates.", ""]
    lines += ["| model | safe refusal (phrases) | safe refusal (judge) | unsafe compliance (phrases) | unsafe compliance (judge) | "
              "judge–phrase agreement | n safe / unsafe |", "|---|---|---|---|---|---|---|"]
    for name, e in results["over_refusal"].items():
        judged = [(e.get(f"{k}_agreement"), e.get(f"{k}_n", 0)) for k in ("safe", "unsafe") if f"{k}_agreement" in e]
        agreement = sum(a * n for a, n in judged) / sum(n for _, n in judged) if judged else None
        comply = lambda key: 1 - e[key] if key in e else None  # noqa: E731
        lines.append(f"| {name} | {_rate(e.get('safe_refusal_rate_phrases'))} | {_rate(e.get('safe_refusal_rate_judge'))} | "
                     f"{_rate(comply('unsafe_refusal_rate_phrases'))} | {_rate(comply('unsafe_refusal_rate_judge'))} | {_rate(agreement)} | "
                     f"{e.get('safe_n', 0)} / {e.get('unsafe_n', 0)} |")
    return lines + [""]


def accuracy_rows(title: str, h: dict) -> list[str]:
    lines = [f"## {title}", "", "| subset | n | accuracy | 95% CI |", "|---|---|---|---|"]
    for name, r in [("all", h)] + list(h.get("subsets", {}).items()):
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} |")
    return lines + [""]


def report_markdown(results: dict, plots: list[str]) -> str:
    lines = ["# caikit eval compare", "", f"Models: {', '.join(results['models'])}.", "", "## Verdict", ""]
    lines += [f"- {line}" for line in verdict_lines(results)] + [""]
    lines += source_rows(results)
    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            lines += elo_rows(kind, source, table)
    lines += absolute_rows(results) + over_refusal_rows(results)
    if results.get("hhh_pm_accuracy"):
        lines += accuracy_rows("HHH accuracy of the preference model", results["hhh_pm_accuracy"])
    if results.get("pm_human_accuracy"):
        lines += accuracy_rows("Preference model on the human-labelled pairs", results["pm_human_accuracy"])
    if results.get("pm_by_revision_round"):
        lines += ["## PM score by revision round", "", "| round | mean PM score |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in results["pm_by_revision_round"].items()] + [""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def report_html(markdown_text: str, folder: Path) -> str:
    """report.md as one self-contained HTML page: text escaped (a model name is never markup), the
    plots embedded as data URIs, no script and nothing fetched from the network."""
    import markdown

    body = markdown.markdown(markdown_text.replace("&", "&amp;").replace("<", "&lt;"), extensions=["tables"])

    def embed(match: re.Match) -> str:
        name = html.unescape(match.group(1))
        path = folder / name
        if path.parent != folder or not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
             "table{border-collapse:collapse;margin:0.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:0.25rem 0.6rem}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1rem 0}")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>caikit eval compare</title>'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; style-src \'unsafe-inline\'">'
            f"<style>{style}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_reports(out: Path, results: dict) -> None:
    """Plots, report.md and report.html in `out`."""
    text = report_markdown(results, write_plots(out, results))
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(report_html(text, out))
