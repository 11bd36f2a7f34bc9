"""What every command shares: the plugin host of the ``sft`` invocation, with its warnings said once."""

from __future__ import annotations

import click

from ..host.manager import PluginHost


def host_of(ctx) -> PluginHost:
    """The plugin host the ``sft`` group was started with; warnings about plugins go to stderr."""
    host = ctx.find_root().obj
    for warning in getattr(host, "warnings", ()):
        click.echo(f"warning: {warning}", err=True)
    for failed in host.failed:
        click.echo(f"warning: plugin {failed.name!r} ({failed.distribution or failed.module}) failed to load: "
                   f"{failed.error}", err=True)
    return host
