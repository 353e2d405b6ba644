"""The `selftune-events` command: one Typer app, a module per command group."""

import typer

from app.cli import dev, events, keys, orgs, retention, runs, server, tokens
from app.cli.tail import tail

app = typer.Typer(
    name="selftune-events",
    help="Live, resumable events of Cloud Improve runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("migrate")(server.migrate)
app.command("serve")(server.serve)
app.command("dev")(dev.dev)
app.add_typer(orgs.app, name="orgs")
app.add_typer(keys.app, name="keys")
app.add_typer(runs.app, name="runs")
app.command("emit")(events.emit)
app.command("simulate")(events.simulate)
app.add_typer(tokens.app, name="tokens")
app.command("prune")(retention.prune)
app.command("tail")(tail)


def main() -> None:
    app(prog_name="selftune-events")


if __name__ == "__main__":
    main()
