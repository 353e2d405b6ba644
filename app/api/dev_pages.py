"""Pages for local development only (DEV_PAGES=true, which `dev` sets)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

RUN_PAGE = Path(__file__).with_name("pages") / "run.html"


@router.get("/dev/runs/{run_id}")
async def run_timeline_page(run_id: str) -> HTMLResponse:
    """A live timeline of one run, read with a read token from the URL fragment.

    The fragment never reaches the server or its logs; the page sends the
    token as a bearer header from a fetch-based SSE reader.
    """
    return HTMLResponse(RUN_PAGE.read_text(encoding="utf-8"))
