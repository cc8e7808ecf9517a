"""What a report may conclude. Every source of judgment (the judge, the preference model) is
qualified by its measured validity; all pairwise Elo differences of a report are one family,
corrected with Holm-Bonferroni; the verdict has one line per measure and source, then one per
source on what it can be trusted for. Intervals are signed in the direction a sentence states.
"""

from __future__ import annotations

from caikit.stats import holm

ALPHA = 0.05
METHOD = "Holm-Bonferroni"
SOURCES = {"judge": "judge", "pm": "PM"}


def qualify(measured: dict | None, what: str) -> dict:
    """A source's standing from an accuracy (or agreement) with humans and its 95% interval:
    `evidence` (the interval above 0.5), `chance` (it includes 0.5), `below` (below 0.5: its
    preferences point the wrong way) or `unmeasured`; with a short `label` for the verdict."""
    if not measured:
        return {"status": "unmeasured", "label": "unmeasured", "what": what}
    value, (lo, hi), n = measured["value"], measured["ci95"], measured["n"]
    status = "evidence" if lo > 0.5 else "below" if hi < 0.5 else "chance"
    figure = f"{what} {value:.2f} [{lo:.2f}-{hi:.2f}], n={n}"
    label = figure if status == "evidence" else f"not evidence: {figure}"
    return {"status": status, "label": label, "what": what, "value": value, "ci95": [lo, hi], "n": n}


def validity(results: dict) -> dict[str, dict]:
    """The qualification of each source that judged something in `results`."""
    found = {}
    human = results.get("judge_human_agreement")
    found["judge"] = qualify(human and {"value": human["agreement"], "ci95": human["ci95"], "n": human["n"]}, "human agreement")
    measured = [(results[key]["n"], what, results[key]) for key, what in (("hhh_pm_accuracy", "HHH accuracy"), ("pm_human_accuracy", "human-pair accuracy"))
                if results.get(key) and results[key].get("accuracy") is not None]
    _, what, pm = max(measured, key=lambda m: m[0]) if measured else (0, "accuracy", None)  # the larger sample (HHH on a tie)
    found["pm"] = qualify(pm and {"value": pm["accuracy"], "ci95": pm["ci95"], "n": pm["n"]}, what)
    return found


def correct(results: dict) -> dict:
    """Holm-Bonferroni over every Elo difference in `results["elo"]`: each difference gains `p_holm`,
    `significant` becomes the corrected verdict (`significant_uncorrected` keeps the raw one), and
    the family is described under `results["multiple_comparisons"]`, which is returned."""
    family = {(kind, source, pair): d for kind, sources in results["elo"].items() for source, table in sources.items()
              for pair, d in table["differences"].items()}
    adjusted = holm({key: d["p"] for key, d in family.items()})
    for key, d in family.items():
        d["significant_uncorrected"] = d.get("significant_uncorrected", d["significant"])
        d["p_holm"] = adjusted[key]
        d["significant"] = adjusted[key] < ALPHA
    summary = {"method": METHOD, "alpha": ALPHA, "tested": len(family), "significant": sum(d["significant"] for d in family.values()),
               "significant_uncorrected": sum(d["significant_uncorrected"] for d in family.values())}
    results["multiple_comparisons"] = summary
    return summary


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def stated(pair: str, d: dict) -> str:
    """'A > B by X Elo [lo to hi]' with the interval signed in that direction."""
    first, second = pair.split(" - ")
    lo, hi = d["ci95"]
    if d["diff"] < 0:
        first, second, lo, hi = second, first, -hi, -lo
    return f"{first} > {second} by {abs(d['diff']):.0f} Elo [95% CI {lo:+.0f} to {hi:+.0f}] (Holm p{p_value(d['p_holm']) if d['p_holm'] < 0.001 else '=' + p_value(d['p_holm'])})"


def measure_line(kind: str, source: str, table: dict, standing: dict) -> str:
    tested = len(table["differences"])
    found = [stated(pair, d) for pair, d in table["differences"].items() if d["significant"]]
    head = f"{kind.capitalize()}, {table['prompts']} prompts ({SOURCES[source]}, {standing['label']})"
    if not found:
        return f"{head}: no difference survives correction ({tested} tested)."
    rest = tested - len(found)
    tail = f"; {rest} other{'s' if rest != 1 else ''} not significant" if rest else ""
    caveat = "" if standing["status"] == "evidence" else " (but the source is not evidence, so neither is this)"
    return f"{head}: {'; '.join(found)}{tail}{caveat}."


def trust_line(source: str, standing: dict, results: dict) -> str:
    name = {"judge": "The judge", "pm": "The preference model"}[source]
    status = standing["status"]
    if status == "unmeasured":
        how = "pass --check-human FILE" if source == "judge" else "pass --hhh FILE (HHH rows or a held-out preference file) or --check-human FILE"
        line = f"{name}: its agreement with human choices is unmeasured ({how}); treat its differences as unvalidated."
    elif status == "below":
        line = (f"{name}: {standing['what']} {standing['value']:.2f} [{standing['ci95'][0]:.2f}-{standing['ci95'][1]:.2f}] "
                f"on {standing['n']} pairs is reliably below chance: its preferences point the wrong way, so its differences "
                "are not evidence, and labels or rewards from it would teach the opposite of what it is meant to.")
    elif status == "chance":
        line = (f"{name}: {standing['what']} {standing['value']:.2f} [{standing['ci95'][0]:.2f}-{standing['ci95'][1]:.2f}] "
                f"on {standing['n']} pairs: no better than chance, so its differences are not evidence.")
    else:
        line = (f"{name}: {standing['what']} {standing['value']:.2f} [{standing['ci95'][0]:.2f}-{standing['ci95'][1]:.2f}] "
                f"on {standing['n']} pairs: its judgments carry signal (better than chance, not necessarily human-level).")
    check = results.get("over_refusal_judge")
    if source == "judge" and check and not check["usable"]:
        line += f" For over-refusal it is unusable ({check['why']}); those rates come from refusal phrases."
    return line


def verdict_lines(results: dict) -> list[str]:
    """The verdict: how many differences were tested and how corrected, one line per measure and
    source, then one line per source on what it can be trusted for."""
    if "multiple_comparisons" not in results:
        correct(results)
    family = results["multiple_comparisons"]
    standing = validity(results)
    used = [s for s in ("judge", "pm") if any(s in sources for sources in results["elo"].values())]
    lines = [f"{family['tested']} Elo differences tested as one family; significant means after {family['method']} at a "
             f"familywise {family['alpha']:.0%} ({family['significant']} survive; {family['significant_uncorrected']} would, uncorrected)."
             if family["tested"] else "No Elo comparison was made."]
    for kind, sources in results["elo"].items():
        for source, table in sources.items():
            lines.append(measure_line(kind, source, table, standing[source]))
    lines += [trust_line(source, standing[source], results) for source in used]
    return lines


def verdict(results: dict) -> str:
    return "\n".join(verdict_lines(results))
