"""`layerbench scenarios`: the built-in scenarios and what each shows."""

from __future__ import annotations

import textwrap

import click

from layerbench.scenario import builtin_scenarios, load_scenario

__all__ = ["scenarios_cmd"]


@click.command("scenarios")
def scenarios_cmd() -> None:
    """List the built-in scenarios with their parameters and descriptions."""
    for name, path in sorted(builtin_scenarios().items()):
        s = load_scenario(path)
        params = ", ".join(f"{k}={v}" for k, v in s.params.items()) or "no parameters"
        click.echo(f"{name}  ({params})")
        click.echo(textwrap.fill(s.description, width=88, initial_indent="    ", subsequent_indent="    "))
