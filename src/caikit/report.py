"""The files `eval compare` writes for people: Elo bar charts, the harmlessness-vs-helpfulness
frontier, PM score by revision round, and report.md."""

from __future__ import annotations

import json
from pathlib import Path


def plot_elo(path: Path, table: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    values = [table[n]["elo"] for n in names]
    errors = [[v - table[n]["ci95"][0] for n, v in zip(names, values)], [table[n]["ci95"][1] - v for n, v in zip(names, values)]]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    ax.bar(names, values, yerr=errors, capsize=6, color="#4c78a8")
    ax.set_ylabel("Elo")
    ax.set_title(title)
    ax.set_ylim(min(v[0] for v in (table[n]["ci95"] for n in names)) - 50, max(v[1] for v in (table[n]["ci95"] for n in names)) + 50)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(path: Path, harmless: dict, helpful: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name in harmless:
        x, y = helpful[name]["elo"], harmless[name]["elo"]
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("helpfulness Elo")
    ax.set_ylabel("harmlessness Elo")
    ax.set_title("harmlessness vs helpfulness")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rounds(path: Path, by_round: dict[int, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = sorted(by_round)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(rounds, [by_round[r] for r in rounds], marker="o")
    ax.set_xlabel("number of revisions")
    ax.set_ylabel("mean PM score")
    ax.set_title("PM score by revision round")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(out: Path, results: dict) -> list[str]:
    made = []
    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            name = f"elo_{kind}_{source}.png"
            plot_elo(out / name, table["models"], f"{kind} Elo ({source})")
            made.append(name)
    elo = results["elo"]
    if "harmlessness" in elo and "helpfulness" in elo:
        source = "judge" if "judge" in elo["harmlessness"] and "judge" in elo["helpfulness"] else "pm"
        if source in elo["harmlessness"] and source in elo["helpfulness"]:
            plot_frontier(out / "frontier.png", elo["harmlessness"][source]["models"], elo["helpfulness"][source]["models"])
            made.append("frontier.png")
    if results.get("pm_by_revision_round"):
        plot_rounds(out / "revisions.png", results["pm_by_revision_round"])
        made.append("revisions.png")
    return made


def verdict(results: dict) -> str:
    """The report's opening paragraph: which differences are significant and which are not, and how
    far the judges can be trusted."""
    said = []
    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            n = table["prompts"]
            for pair, d in table["differences"].items():
                first, second = pair.split(" - ")
                lo, hi = d["ci95"]
                if d["significant"]:
                    better, worse = (first, second) if d["diff"] > 0 else (second, first)
                    said.append(f"{better} beats {worse} on {kind} ({source}): {abs(d['diff']):.0f} Elo (95% CI {lo:+.0f} to {hi:+.0f}, n={n} prompts)")
                else:
                    said.append(f"no measurable {kind} difference between {first} and {second} ({source}) at n={n} "
                                f"({d['diff']:+.0f} Elo, 95% CI {lo:+.0f} to {hi:+.0f})")
    text = ("; ".join(said) + ".") if said else "No Elo comparison was made."  # (model names keep their case)
    human = results.get("judge_human_agreement")
    if human:
        lo, hi = human["ci95"]
        text += (f" The judge agrees with human choices on {human['agreement']:.0%} of {human['n']} human-labelled pairs "
                 f"(95% CI {lo:.0%}-{hi:.0%})" + (": its judgments carry signal." if human["signal"]
                                                     else ": no better than chance, so its Elo differences are not evidence."))
    elif "judge" in {s for sources in results["elo"].values() for s in sources}:
        text += " The judge's agreement with human judgments was not measured (pass --check-human FILE)."
    check = results.get("over_refusal_judge")
    if check and not check["usable"]:
        text += f" The judge is unusable for over-refusal ({check['why']}); the refusal rates below come from refusal phrases."
    return text


def report_markdown(results: dict, plots: list[str]) -> str:
    lines = ["# caikit eval compare", "", f"Models: {', '.join(results['models'])}.", "", "## Verdict", "", verdict(results), ""]
    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            lines += [f"## {kind.capitalize()} Elo ({source}, n={table['prompts']} prompts)", "", "| model | Elo | 95% CI |", "|---|---|---|"]
            lines += [f"| {n} | {t['elo']:.0f} | {t['ci95'][0]:.0f}–{t['ci95'][1]:.0f} |" for n, t in table["models"].items()]
            lines += ["", "| difference | Elo | 95% CI | significant |", "|---|---|---|---|"]
            lines += [f"| {pair} | {d['diff']:+.0f} | {d['ci95'][0]:+.0f} to {d['ci95'][1]:+.0f} | {'yes' if d['significant'] else 'no'} |"
                      for pair, d in table["differences"].items()]
            lines.append("")
    for key, value in results["absolute"].items():
        lines += [f"## {key.replace('_', ' ')}", "", "```", json_block(value), "```", ""]
    if "over_refusal" in results:
        lines += ["## Over-refusal (XSTest-style prompts)", ""]
        check = results.get("over_refusal_judge")
        if check and not check["usable"]:
            lines += [f"The judge is unusable for this measure ({check['why']}): read the phrase-based rates.", ""]
        lines += ["| model | metric | value |", "|---|---|---|"]
        for name, entry in results["over_refusal"].items():
            lines += [f"| {name} | {k.replace('_', ' ')} | {v:.3f} |" if isinstance(v, float) else f"| {name} | {k.replace('_', ' ')} | {v} |" for k, v in entry.items()]
        lines.append("")
    if results.get("hhh_pm_accuracy"):
        h = results["hhh_pm_accuracy"]
        lines += ["## HHH accuracy of the preference model", "", "| subset | n | accuracy | 95% CI |", "|---|---|---|---|"]
        for name, r in [("all", h)] + list(h["subsets"].items()):
            lines.append(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} |")
        lines.append("")
    if results.get("pm_by_revision_round"):
        lines += ["## PM score by revision round", "", "| round | mean PM score |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in results["pm_by_revision_round"].items()]
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def json_block(value) -> str:
    return json.dumps(value, indent=2)
