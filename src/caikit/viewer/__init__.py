"""`caikit view`: a run's records in the browser, and human labels for calibrating the feedback model.

- index: a JSONL file browsed through an index of byte offsets (never read into memory), filtered
  scans with stage and principle facets;
- shapes: what each record shape shows (redteam, revise with word diffs, label pairs, eval judgments);
- sources: the files, reports and eval answers of the paths given;
- annotate: one pair at a time, labels written as preference records, running agreement;
- app: the Starlette routes and the self-contained export; templates/ and static/ hold the pages.
"""

from __future__ import annotations

from urllib.parse import urlencode


def build(paths: list[str], *, where: list[str], export, limit: int, annotate, output, annotator: str, seed: int, host: str):
    """(the app, the path to open first), or (None, what was exported) for --export."""
    from caikit.viewer.annotate import Annotation
    from caikit.viewer.app import create_app, export as write_page
    from caikit.viewer.index import Query
    from caikit.viewer.sources import Sources

    query = Query(where)  # a bad filter fails before anything is read
    sources = Sources(paths) if paths else None
    if export is not None:
        count = write_page(sources, export, query, limit)
        return None, f"{count} records -> {export}"
    annotation = Annotation(annotate, output, annotator=annotator, seed=seed) if annotate else None
    hosts = ["*"] if host in ("0.0.0.0", "::") else ["127.0.0.1", "localhost", "[::1]", host]
    first = "/annotate" if annotation else f"/f/0?{urlencode({'where': where}, doseq=True)}" if where and sources.files else "/"
    return create_app(sources, annotation, hosts=hosts), first
