"""The `meterd` command: the server, API keys, and a client for people (meters, ingest, query, tail)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import click

from meterd import __version__
from meterd.cli import client as client_commands
from meterd.cli import entitlements as entitlement_commands
from meterd.cli import ops
from meterd.cli.ops import load as _settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meterd")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="METERD_CONFIG",
    help="YAML settings file (env METERD_CONFIG). Every setting is also read from METERD_* variables.",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """meterd: usage metering for usage-based billing, compatible with OpenMeter's API.

    Start the server with `meterd serve`; send it events with LiteLLM's openmeter callback, an OpenMeter
    SDK, or `meterd ingest`; read usage with `meterd query`."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", help="Address to bind [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port [default: 8888].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory [default: ./meterd-data].",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    default=None,
    help="Allow a non-loopback bind without any API key (anyone who can reach it can write and read).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[default: info]")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    insecure_no_auth: bool | None,
    log_level: str | None,
) -> None:
    """Run the server. Embedded mode (the default): API, journal, sink and event store in one process.
    Cluster mode (`mode: cluster`): a stateless API node producing events to Kafka."""
    import uvicorn

    from meterd.bootstrap import build_services
    from meterd.http.app import create_app

    settings = _settings(
        ctx,
        log_level=log_level,
        server={"host": host, "port": port, "insecure_no_auth": insecure_no_auth},
        storage={"data_dir": data_dir},
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = build_services(settings)
    if not _is_loopback(settings.server.host) and not services.keys.enabled() and not settings.server.insecure_no_auth:
        services.close()
        raise click.ClickException(
            f"refusing to serve {settings.server.host} without API keys: create one with `meterd keys create`, "
            "set METERD_API_KEYS, or pass --insecure-no-auth"
        )
    app = create_app(services)
    where = "cluster mode" if settings.mode == "cluster" else f"data: {settings.storage.data_dir.resolve()}"
    click.echo(f"meterd {__version__} serving http://{settings.server.host}:{settings.server.port} ({where})", err=True)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level,
        access_log=settings.server.access_log,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=30,
        server_header=False,
    )


@cli.group()
def keys() -> None:
    """Manage API keys (stored hashed in the data directory's metadata database)."""


def _key_service(ctx: click.Context, data_dir: Path | None) -> Any:
    from meterd.bootstrap import key_service, metadata_engine

    settings = _settings(ctx, storage={"data_dir": data_dir})
    return key_service(settings, metadata_engine(settings)), settings


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory [default: ./meterd-data].",
)


@keys.command("create")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
@click.option("--namespace", help="Namespace the key grants [default: the default namespace].")
@_data_dir_option
@click.pass_context
def keys_create(ctx: click.Context, name: str, namespace: str | None, data_dir: Path | None) -> None:
    """Create a key and print it once (only its hash is kept)."""
    service, settings = _key_service(ctx, data_dir)
    key, secret = service.create(namespace or settings.namespace, name)
    click.echo(secret)
    click.echo(f"created key {key.id} ({key.prefix}...) for namespace {key.namespace}", err=True)


@keys.command("list")
@_data_dir_option
@click.pass_context
def keys_list(ctx: click.Context, data_dir: Path | None) -> None:
    """List keys (id, prefix, namespace, name, state)."""
    service, _ = _key_service(ctx, data_dir)
    for key in service.list():
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(f"{key.id}  {key.prefix}...  {key.namespace}  {key.name}  {state}")


@keys.command("revoke")
@click.argument("key_id")
@_data_dir_option
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, data_dir: Path | None) -> None:
    """Revoke a key by id or prefix; takes effect on the next request."""
    from meterd.core.errors import NotFoundError

    service, _ = _key_service(ctx, data_dir)
    try:
        key = service.revoke(key_id)
    except NotFoundError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked {key.id} ({key.prefix}...)")


client_commands.register(cli)
entitlement_commands.register(cli)
ops.register(cli)


def main() -> None:
    cli(prog_name="meterd")


if __name__ == "__main__":  # pragma: no cover
    main()
