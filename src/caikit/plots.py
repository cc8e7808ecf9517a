"""The plots `eval compare` writes: Elo bars per measure and source, the harmlessness-vs-helpfulness
frontier per source (the paper's Figure 2, with 95% intervals on both axes), PM score by revision
round. Every title names its source and n."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_elo(path: Path, table: dict, title: str) -> None:
    plt = _pyplot()
    names = list(table)
    values = [table[n]["elo"] for n in names]
    errors = [[v - table[n]["ci95"][0] for n, v in zip(names, values)], [table[n]["ci95"][1] - v for n, v in zip(names, values)]]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    ax.bar(names, values, yerr=errors, capsize=6, color="#4c78a8")
    ax.set_ylabel("Elo (bars: 95% bootstrap CI)")
    ax.set_title(title)
    ax.set_ylim(min(table[n]["ci95"][0] for n in names) - 50, max(table[n]["ci95"][1] for n in names) + 50)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(path: Path, harmless: dict, helpful: dict, title: str, joined: bool = False) -> None:
    """Each model at (helpfulness Elo, harmlessness Elo) with its 95% intervals; `joined`: the models
    are snapshots of one run, in order, drawn as a curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    names = [n for n in harmless if n in helpful]
    xs, ys = [helpful[n]["elo"] for n in names], [harmless[n]["elo"] for n in names]
    if joined:
        ax.plot(xs, ys, color="#999999", zorder=1)
    for name, x, y in zip(names, xs, ys):
        xerr = [[x - helpful[name]["ci95"][0]], [helpful[name]["ci95"][1] - x]]
        yerr = [[y - harmless[name]["ci95"][0]], [harmless[name]["ci95"][1] - y]]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=4, zorder=2)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("helpfulness Elo")
    ax.set_ylabel("harmlessness Elo")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rounds(path: Path, by_round: dict[int, float]) -> None:
    plt = _pyplot()
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
    """The plots of `results`, written to `out`; returns their file names."""
    made = []
    elo = results["elo"]
    for kind, sources in elo.items():
        for source, table in sources.items():
            name = f"elo_{kind}_{source}.png"
            plot_elo(out / name, table["models"], f"{kind} Elo ({source}, n={table['prompts']} prompts)")
            made.append(name)
    for source in ("judge", "pm"):
        harmless, helpful = elo.get("harmlessness", {}).get(source), elo.get("helpfulness", {}).get(source)
        if harmless and helpful:
            name = f"frontier_{source}.png"
            title = (f"harmlessness vs helpfulness Elo ({source})\n"
                     f"n={harmless['prompts']} red-team, {helpful['prompts']} helpful prompts; bars: 95% CI")
            plot_frontier(out / name, harmless["models"], helpful["models"], title, joined=bool(results.get("snapshots")))
            made.append(name)
    if results.get("pm_by_revision_round"):
        plot_rounds(out / "revisions.png", results["pm_by_revision_round"])
        made.append("revisions.png")
    return made
