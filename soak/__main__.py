"""`python -m soak --minutes N`: prints the report, exits 1 if anything was lost."""

import asyncio
import secrets
from typing import Annotated

import typer

from soak.run import SoakOptions, run_soak

app = typer.Typer(add_completion=False)


@app.command()
def main(
    minutes: Annotated[float, typer.Option(min=0.1, help="How long to load.")] = 3.0,
    nginx: Annotated[
        bool, typer.Option(help="Put deploy/nginx.conf in front of both instances.")
    ] = False,
    slots: Annotated[int, typer.Option(min=1, help="Runs live at once.")] = 8,
    clients: Annotated[int, typer.Option(min=1, help="Following clients.")] = 40,
    writers_per_slot: Annotated[int, typer.Option(min=1)] = 2,
    seed: Annotated[int | None, typer.Option(help="Random seed, to replay.")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL server to make a throwaway database on;"
            " an embedded one if not given."
        ),
    ] = None,
    keep_logs: Annotated[
        bool, typer.Option(help="Keep the serve logs; their folder is printed.")
    ] = False,
) -> None:
    """Run two `serve` instances under writers, resuming clients and random
    faults; print lost, duplicated and out-of-order counts, RSS and sessions."""
    options = SoakOptions(
        minutes=minutes,
        nginx=nginx,
        slots=slots,
        clients=clients,
        writers_per_slot=writers_per_slot,
        seed=secrets.randbelow(2**31) if seed is None else seed,
        database_url=database_url,
        keep_logs=keep_logs,
    )
    typer.echo(f"soak seed {options.seed}", err=True)
    report = asyncio.run(run_soak(options))
    for line in report.lines():
        typer.echo(line)
    if not report.is_clean:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
