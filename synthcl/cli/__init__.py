"""The `synthcl` command line: a thin Typer layer over the library's functions."""

from synthcl.cli.app import app, main

__all__ = ["app", "main"]
