"""``tether`` on the command line: ``tether serve APP``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tether.codec import Limits
from tether.runtime.sessions import DEFAULT_TIMEOUT

__all__ = ["main"]

_DEFAULT = Limits()


@click.group()
@click.version_option(package_name="tether")
def main() -> None:
    """Tether: Python client/server apps in which live objects cross the wire safely."""


@main.command()
@click.argument("app")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--tcp-port",
    type=int,
    default=None,
    help="Also serve Python clients on this raw TCP port (tether://HOST:PORT).",
)
@click.option(
    "--tcp-threads",
    default=64,
    show_default=True,
    type=int,
    help="TCP connections read by a thread of their own that runs their sync calls.",
)
@click.option("--uplink-key", envvar="TETHER_UPLINK_KEY", help="Key that makes a client trusted.")
@click.option("--client-key", envvar="TETHER_CLIENT_KEY", help="Key for untrusted clients.")
@click.option("--dev", is_flag=True, help="Send tracebacks with errors (never in production).")
@click.option(
    "--allow-origin", multiple=True, help="Extra browser origin allowed on the WebSocket."
)
@click.option(
    "--threads", default=32, show_default=True, type=int, help="Threads for sync functions."
)
@click.option("--max-frame-bytes", default=_DEFAULT.max_frame_bytes, show_default=True, type=int)
@click.option("--max-depth", default=_DEFAULT.max_depth, show_default=True, type=int)
@click.option("--max-objects", default=_DEFAULT.max_objects, show_default=True, type=int)
@click.option("--max-int-digits", default=_DEFAULT.max_int_digits, show_default=True, type=int)
@click.option("--max-media-bytes", default=_DEFAULT.max_media_bytes, show_default=True, type=int)
@click.option(
    "--max-cacheables",
    default=_DEFAULT.max_cacheables,
    show_default=True,
    type=int,
    help="Cacheables mirrored at once per connection, each way (tether.pb).",
)
@click.option(
    "--data-dir",
    envvar="TETHER_DATA_DIR",
    help="Where the server keeps its files (the default store) [default: APP/.tether].",
)
@click.option(
    "--store",
    envvar="TETHER_STORE",
    help="Where sessions and the secret live: memory or sqlite:///path"
    " [default: sqlite in the data dir].",
)
@click.option(
    "--session-timeout",
    default=DEFAULT_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a session may stay unused before it expires.",
)
@click.option(
    "--trusted-proxy",
    multiple=True,
    help="A reverse proxy (address or network) whose X-Forwarded-For is believed.",
)
@click.option("--geoip", help="A GeoIP2/GeoLite2 City .mmdb file for context.client.location.")
@click.option(
    "--static",
    "static_dir",
    type=click.Path(file_okay=False),
    help="The folder served at /_/static/ (its index.html is the page at /)"
    " [default: static/ beside APP].",
)
@click.option(
    "--origin",
    envvar="TETHER_ORIGIN",
    help="The app's public origin behind a proxy (https://app.example.com), for"
    " get_app_origin() [default: the one each request reached].",
)
@click.option(
    "--max-request-bytes",
    default=16 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=0),
    help="Largest request body an HTTP endpoint accepts (413 beyond).",
)
@click.option(
    "--max-tasks",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Background task processes running at once (the rest wait in a queue).",
)
@click.option(
    "--app-id", default="tether-app", show_default=True, help="anvil.app.id for uplink scripts."
)
@click.option(
    "--environment",
    default="default",
    show_default=True,
    help="anvil.app.environment.name for uplink scripts.",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    app: str,
    host: str,
    port: int,
    tcp_port: int | None,
    tcp_threads: int,
    uplink_key: str | None,
    client_key: str | None,
    dev: bool,
    allow_origin: tuple[str, ...],
    threads: int,
    max_frame_bytes: int,
    max_depth: int,
    max_objects: int,
    max_int_digits: int,
    max_media_bytes: int,
    max_cacheables: int,
    data_dir: str | None,
    store: str | None,
    session_timeout: float,
    trusted_proxy: tuple[str, ...],
    geoip: str | None,
    static_dir: str | None,
    origin: str | None,
    max_request_bytes: int,
    max_tasks: int,
    app_id: str,
    environment: str,
    log_level: str,
) -> None:
    """Serve APP: a module name, a package, a .py file, or a folder holding app.py."""
    from tether.runtime.app import create_app
    from tether.runtime.assets import use_assets
    from tether.runtime.loader import load_app
    from tether.runtime.serving import serve_forever

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    static = static_dir or str(default_static_dir(app))
    use_assets(static, dev=dev)  # static_url() works while APP is imported
    try:
        load_app(app)
        limits = Limits(
            max_frame_bytes,
            max_depth,
            max_objects,
            max_int_digits,
            max_media_bytes,
            max_cacheables,
        )
        asgi = create_app(
            uplink_key=uplink_key,
            client_key=client_key,
            dev=dev,
            limits=limits,
            threads=threads,
            allowed_origins=allow_origin,
            tcp_host=host,
            tcp_port=tcp_port,
            tcp_threads=tcp_threads,
            data_dir=data_dir or str(default_data_dir(app)),
            store=store,
            session_timeout=session_timeout,
            trusted_proxies=trusted_proxy,
            geoip=geoip,
            static_dir=static,
            origin=origin,
            max_request_bytes=max_request_bytes,
            max_tasks=max_tasks,
            app_id=app_id,
            environment=environment,
        )
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    trust = "uplink key set" if uplink_key else "no uplink key: no client is trusted"
    tcp = f", tether://{host}:{tcp_port}" if tcp_port is not None else ""
    click.echo(f"Tether serving {app} on http://{host}:{port}{tcp} (WebSocket /_/ws; {trust})")
    click.echo(
        f"Store: {asgi.dispatcher.store.url}; sessions expire after {session_timeout:g} s idle"
    )
    has_static = Path(static).is_dir()
    page = " (and / from its index.html)" if (Path(static) / "index.html").is_file() else ""
    click.echo(
        f"Static files: {static} at /_/static/{page}"
        if has_static
        else f"Static files: none ({static} does not exist)"
    )
    sys.stdout.flush()
    serve_forever(asgi, host, port, log_level=log_level)


@main.command()
@click.argument("app", required=False)
@click.option("--data-dir", envvar="TETHER_DATA_DIR", help="The server's data dir [APP/.tether].")
@click.option("--store", envvar="TETHER_STORE", help="The server's store (sqlite:///path).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task, for scripts.")
def tasks(app: str | None, data_dir: str | None, store: str | None, as_json: bool) -> None:
    """Lists the background tasks of the server of APP (or of --store / --data-dir)."""
    from tether.runtime.task_list import list_tasks, print_tasks

    if store is None and data_dir is None:
        data_dir = str(default_data_dir(app or "."))
    try:
        rows = list_tasks(store, data_dir)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    print_tasks(rows, as_json=as_json)


def default_static_dir(app: str) -> Path:
    """``static/`` beside APP (``./static`` for a module name)."""
    return beside_app(app, "static")


def default_data_dir(app: str) -> Path:
    """``.tether/`` beside APP (``./.tether`` for a module name)."""
    return beside_app(app, ".tether")


def beside_app(app: str, name: str) -> Path:
    """``APP/name`` for a folder, ``FOLDER/name`` for a file, ``./name`` for a module."""
    path = Path(app)
    if path.is_dir():
        return path / name
    if path.is_file():
        return path.parent / name
    return Path(name)


if __name__ == "__main__":  # pragma: no cover
    main()
