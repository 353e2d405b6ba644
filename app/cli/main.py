"""The `selftune-events` command: one Typer app, a module per command group."""

import sys

import typer

# Typer bundles its own Click; its usage errors are these classes.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from app.cli import dev, events, keys, orgs, retention, runs, server, tokens
from app.cli.execution import INTERRUPTED_EXIT_CODE
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
    """Run the command; a usage error is one line on stderr and exit code 2.

    Click's own report is a box of usage text around the one line that
    matters; scripts and people both want just that line.
    """
    try:
        exit_code = app(prog_name="selftune-events", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(exc.exit_code)
    except UsageError as exc:
        hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(INTERRUPTED_EXIT_CODE)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
