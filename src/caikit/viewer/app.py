"""The web app of `caikit view`: Starlette routes over `Sources`, pages from Jinja2 templates with
autoescaping on (every record text is printed escaped), a Content-Security-Policy that lets a page
load nothing but this server's own stylesheet and script, and a Host check (a web page elsewhere
cannot reach the viewer by DNS rebinding).

    /                     the files, reports and the labelling page
    /f/N?where=&q=&principle=&page=   file N's records, filtered (inspect's --where syntax), paged
    /f/N/I                one record, whole
    /report/N, /asset/N/F a run's report.md and its plots
    /annotate             human labels (with --annotate)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode

from caikit.errors import CaikitError
from caikit.viewer import shapes
from caikit.viewer.index import Query, Scans
from caikit.viewer.sources import Sources, report_html

HERE = Path(__file__).parent
PAGE = 20
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


def templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["p"] = lambda v: "–" if v is None else f"{v:.3f}"
    return env


def create_app(sources: Sources | None, annotation=None, hosts: list[str] | None = None):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env, scans = templates(), Scans()
    files = sources.files if sources else []
    reports = sources.reports if sources else []

    def page(name: str, status: int = 200, **values) -> HTMLResponse:
        html = env.get_template(name).render(files=files, reports=reports, annotating=annotation is not None, **values)
        return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    def missing(what: str) -> HTMLResponse:
        return page("message.html", 404, title="not found", message=f"{what} not found")

    def home(request):
        if not files and not reports:
            return RedirectResponse("/annotate", status_code=303)
        return page("home.html", title="caikit view")

    def records(request):
        n = request.path_params["n"]
        if n >= len(files):
            return missing(f"file {n}")
        source, args = files[n], request.query_params
        try:
            query = Query(args.getlist("where"), args.get("q", ""), args.get("principle", ""))
        except CaikitError as err:
            return page("message.html", 400, title="bad filter", message=str(err))
        number = max(1, int(args["page"])) if args.get("page", "").isdigit() else 1
        scan = scans.get(source.index, query)
        positions = scan.page((number - 1) * PAGE, PAGE)
        shown = [(i, source.index.line(i), shapes.view(source.index.record(i), source.answers)) for i in positions]

        def link(**change):
            values = {"where": query.where, "q": query.text, "principle": query.principle, "page": number, **change}
            return f"/f/{n}?" + urlencode({k: v for k, v in values.items() if v not in ("", [], None)}, doseq=True)

        return page("records.html", title=source.name, source=source, n=n, query=query, shown=shown, scan=scan,
                    number=number, page_size=PAGE, link=link, errors=len(scan.errors))

    def record(request):
        n, i = request.path_params["n"], request.path_params["i"]
        if n >= len(files) or i >= len(files[n].index):
            return missing(f"record {i} of file {n}")
        source = files[n]
        return page("record.html", title=f"{source.name} #{i + 1}", source=source, n=n, i=i, line=source.index.line(i),
                    v=shapes.view(source.index.record(i), source.answers))

    def report(request):
        n = request.path_params["n"]
        if n >= len(reports):
            return missing(f"report {n}")
        body = report_html(reports[n], lambda name: f"/asset/{n}/{name}")
        return page("report.html", title=str(reports[n]), body=body)

    def asset(request):
        n, name = request.path_params["n"], request.path_params["name"]
        path = reports[n].parent / name if n < len(reports) else None
        if path is None or not name.endswith(".png") or "/" in name or name.startswith(".") or not path.is_file():
            return Response("not found", status_code=404)
        return FileResponse(path, media_type="image/png")

    async def annotate(request):
        if annotation is None:
            return missing("labelling (start caikit view with --annotate PAIRS -o FILE)")
        if request.method == "POST":  # a plain urlencoded form: two short fields
            body = await request.body()
            if len(body) > 4096:
                return Response("request too large", status_code=413)
            form = parse_qs(body.decode("utf-8", errors="replace"))
            await run_in_threadpool(annotation.answer, form.get("id", [""])[0], form.get("choice", [""])[0])
            return RedirectResponse("/annotate", status_code=303)
        return page("annotate.html", title="caikit view: label pairs", a=annotation, pair=annotation.current,
                    agreement=annotation.agreement())

    routes = [
        Route("/", home), Route("/f/{n:int}", records), Route("/f/{n:int}/{i:int}", record), Route("/report/{n:int}", report),
        Route("/asset/{n:int}/{name}", asset), Route("/annotate", annotate, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    allowed = hosts or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed)])


def export(sources: Sources, path: Path, query: Query, limit: int) -> int:
    """One self-contained page of the first `limit` records (per file) that `query` keeps: styles
    inlined, no script, nothing fetched. Written to a temporary file and renamed. Returns the count."""
    import os
    import tempfile

    shown, count = [], 0
    for source in sources.files:
        found = []
        for i, row in source.index.records():
            if len(found) >= limit:
                break
            if not query or query.keeps(row):
                found.append((i, source.index.line(i), shapes.view(row, source.answers)))
        shown.append((source, found))
        count += len(found)
    html = templates().get_template("export.html").render(sections=shown, query=query, limit=limit,
                                                          css=(HERE / "static" / "view.css").read_text())
    folder = path.resolve().parent
    if not folder.is_dir():
        raise CaikitError(f"--export {path}: directory {folder} does not exist")
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(html)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # (a temporary file is private; the page is made to be shared)
    os.replace(f.name, path)
    return count
