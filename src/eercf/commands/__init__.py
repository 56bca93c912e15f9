"""Subcommands of the ``eercf`` CLI, one module each (discovered by ``eercf.cli``)."""
