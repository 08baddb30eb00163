"""One module per tracing subcommand; each defines `command` (click) and its declaration."""

SUBCOMMANDS = ("kill", "latency", "bind", "rules", "trace", "exec", "exit", "net", "ioctl",
               "compare", "clock", "watch")
