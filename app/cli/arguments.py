"""Arguments and options shared by several commands, parsed into app types.

A malformed value is a usage error (exit 2); a well-formed id that names
nothing is the command's to report (exit 1).
"""

import json
import uuid
from typing import Annotated, Any

import typer

from app.ids import (
    EVENT_PREFIX,
    parse_event_id,
    parse_hyphenated_uuid,
    parse_org_id,
    parse_run_id,
)

JsonObject = dict[str, Any]


def parse_org_argument(text: str) -> uuid.UUID:
    org_id = parse_org_id(text.strip())
    if org_id is None:
        raise typer.BadParameter("give the organisation's org_ id or its UUID")
    return org_id


def parse_run_argument(text: str) -> uuid.UUID:
    run_id = parse_run_id(text.strip())
    if run_id is None:
        raise typer.BadParameter("give the run's run_ id or its UUID")
    return run_id


def parse_event_argument(text: str) -> uuid.UUID:
    text = text.strip()
    event_id = (
        parse_event_id(text)
        if text.startswith(EVENT_PREFIX + "_")
        else parse_hyphenated_uuid(text)
    )
    if event_id is None:
        raise typer.BadParameter("give an evt_ id or a UUID")
    return event_id


def parse_payload_argument(text: str) -> str:
    """Check that `text` is a JSON object and hand it on as text.

    The database parses it itself, so numbers keep every digit the user
    typed; a round trip through Python floats would not.
    """
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise typer.BadParameter(
            'must be a JSON object, such as \'{"message": "hello"}\''
        )
    return text


OrgOption = Annotated[
    uuid.UUID,
    typer.Option(
        "--org",
        parser=parse_org_argument,
        metavar="ORG",
        help="The organisation: its org_ id or its UUID.",
        show_default=False,
    ),
]

RunArgument = Annotated[
    uuid.UUID,
    typer.Argument(
        parser=parse_run_argument,
        metavar="RUN",
        help="The run: its run_ id or its UUID.",
        show_default=False,
    ),
]
