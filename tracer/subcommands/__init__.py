"""One module per tracing subcommand; each defines `command` (click) and its declaration."""

SUBCOMMANDS = ("kill",)
