"""The subcommands of the ``scopewatch`` console script, one module each."""
