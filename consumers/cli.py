"""The ``streammon`` command line.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from consumers.logs import setup_logging
from streaming.errors import ConfigError, StreammonError
from streaming.settings import Settings, load_settings

log = logging.getLogger("streammon")

app = typer.Typer(
    name="streammon",
    help=(
        "Streaming monitor for ML models in production: joins predictions with delayed "
        "outcomes on Kafka, keeps metrics and drift detectors in Redis exactly once.\n\n"
        "Example: STREAMMON_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 streammon topics create"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Create and check the topics.", no_args_is_help=True)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
alerts_app = typer.Typer(help="Read and forward alert transitions.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: versions, champions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")
app.add_typer(alerts_app, name="alerts")

out = Console()
err = Console(stderr=True)


def _version() -> str:
    try:
        return version("streammon")
    except PackageNotFoundError:
        return "0+unknown"


class _Ctx:
    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
        return self._settings


def _ctx(ctx: typer.Context) -> _Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, _Ctx)
    return obj


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"streammon {_version()}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML config file (or STREAMMON_CONFIG_FILE).")
    ] = None,
    kafka_bootstrap_servers: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers (STREAMMON_KAFKA_BOOTSTRAP_SERVERS)."),
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL (STREAMMON_REDIS_URL).")] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="Prefix of every topic name (STREAMMON_TOPIC_PREFIX).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json.")] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Global options; every one also has an environment variable."""
    overrides = {
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "redis_url": redis_url,
        "topic_prefix": topic_prefix,
        "log_level": log_level,
        "log_format": log_format,
    }
    ctx.obj = _Ctx(config, overrides)


def _settings_or_exit(ctx: typer.Context) -> Settings:
    try:
        settings = _ctx(ctx).settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    setup_logging(settings.log_level, settings.log_format)
    return settings


def _fail(exc: StreammonError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


# ---- topics ---------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create every topic idempotently (predictions and outcomes co-partitioned).

    Example: streammon --topic-prefix dev. topics create
    """
    from streaming.kafka_io import create_topics

    settings = _settings_or_exit(ctx)
    try:
        reports = create_topics(settings)
    except StreammonError as exc:
        raise _fail(exc) from exc
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "topic": r.name,
                        "partitions": r.partitions,
                        "created": r.created,
                        "config": dict(r.config),
                    }
                    for r in reports
                ]
            )
        )
        return
    table = Table("topic", "partitions", "state", "cleanup.policy", box=None)
    for r in reports:
        table.add_row(
            r.name,
            str(r.partitions),
            "created" if r.created else "exists",
            r.config.get("cleanup.policy", ""),
        )
    out.print(table)


# ---- config ---------------------------------------------------------------------------------
@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings (secrets masked) as JSON.

    Example: STREAMMON_TOPIC_PREFIX=dev. streammon config show
    """
    settings = _settings_or_exit(ctx)
    out.print_json(json.dumps(settings.masked()))


# ---- services -------------------------------------------------------------------------------
def _store(settings: Settings) -> Any:
    from streaming.state_store import RedisStateStore, redis_client_from_settings

    return RedisStateStore(
        redis_client_from_settings(settings),
        namespace_of(settings),
        max_backoff_s=settings.retry_max_backoff_s,
    )


def namespace_of(settings: Settings) -> str:
    """The Redis key namespace: the key prefix, plus the topic prefix when one is set."""
    if settings.topic_prefix:
        return f"{settings.redis_key_prefix}:{settings.topic_prefix}"
    return settings.redis_key_prefix


def _warn_insecure(settings: Settings) -> None:
    if settings.uses_insecure_key:
        log.warning(
            "STREAMMON_STATE_HMAC_KEY is not set: state blobs are signed with the public "
            "development key; set a secret key in production"
        )


def _run_services(settings: Settings, names: list[str]) -> int:
    from consumers.evaluator import Evaluator
    from consumers.joiner import Joiner
    from consumers.service import GracefulStop
    from streaming.kafka_io import (
        check_by_model_copartitioned,
        check_copartitioned,
        wait_for_kafka,
    )

    _warn_insecure(settings)
    admin = wait_for_kafka(settings)
    if "joiner" in names:
        check_copartitioned(admin, settings)
    if "evaluator" in names and settings.label_free_monitoring:
        check_by_model_copartitioned(admin, settings)
    stop = GracefulStop()
    stop.install()
    services = []
    for name in names:
        cls = Joiner if name == "joiner" else Evaluator
        services.append(cls(settings, _store(settings), stop=stop))
    if len(services) == 1:
        return services[0].run()
    errors: list[BaseException] = []

    def target(svc: Any) -> None:
        try:
            svc.run()
        except BaseException as exc:
            errors.append(exc)
            log.exception("%s failed", svc.name)
            stop.event.set()

    threads = [threading.Thread(target=target, args=(s,), name=s.name) for s in services]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
    return 1 if errors else 0


def _service_command(ctx: typer.Context, names: list[str]) -> None:
    settings = _settings_or_exit(ctx)
    try:
        code = _run_services(settings, names)
    except StreammonError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


@app.command()
def joiner(ctx: typer.Context) -> None:
    """Join predictions with their outcomes into `labeled` (one consumer group member).

    Example: STREAMMON_JOIN_MAX_LABEL_DELAY_MS=3600000 streammon joiner
    """
    _service_command(ctx, ["joiner"])


@app.command()
def evaluator(ctx: typer.Context) -> None:
    """Keep metrics and drift detectors per model from `labeled` (one group member).

    Example: STREAMMON_WINDOWS='["count:500","time:10m"]' streammon evaluator
    """
    _service_command(ctx, ["evaluator"])


@app.command()
def monitor(ctx: typer.Context) -> None:
    """Run the joiner and the evaluator together in one process (small deployments).

    Example: streammon --topic-prefix dev. monitor
    """
    _service_command(ctx, ["joiner", "evaluator"])


# ---- status ---------------------------------------------------------------------------------
@app.command()
def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show metrics, detectors, counts and consumer lag per model and version.

    Example: streammon status --model credit --json
    """
    from consumers.status_view import end_offset_reader, render_status
    from streaming.status import read_status

    settings = _settings_or_exit(ctx)
    try:
        reader = end_offset_reader(settings)
        data = read_status(_store(settings), end_offset=reader, model=model)
    except StreammonError as exc:
        raise _fail(exc) from exc
    data["consumer_groups"] = {
        settings.consumer_group(k): v for k, v in data["consumer_groups"].items()
    }
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    render_status(out, data)


# ---- trainer and registry -------------------------------------------------------------------
@app.command()
def trainer(ctx: typer.Context) -> None:
    """Answer retrain requests: tune, select, gate and register model versions.

    Example: STREAMMON_TRAINER_TIME_BUDGET_S=60 streammon trainer
    """
    from consumers.service import GracefulStop
    from consumers.trainer import Trainer
    from streaming.kafka_io import wait_for_kafka

    settings = _settings_or_exit(ctx)
    stop = GracefulStop()
    stop.install()
    try:
        wait_for_kafka(settings)
        code = Trainer(settings, stop=stop).run()
    except StreammonError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


def _registry(settings: Settings) -> Any:
    from streaming.registry import registry_from_settings

    return registry_from_settings(settings)


def _version_row(v: Any) -> dict[str, Any]:
    record: dict[str, Any] = v.to_record()
    record["announced"] = v.announced
    return record


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List model versions with status, metrics and lineage.

    Example: streammon models list credit --json
    """
    settings = _settings_or_exit(ctx)
    try:
        versions = _registry(settings).list(model)
    except StreammonError as exc:
        raise _fail(exc) from exc
    if as_json:
        rows = [_version_row(v) for v in versions]
        for row in rows:
            row.pop("reference_profile", None)
        sys.stdout.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
        return
    table = Table(
        "model", "version", "status", "parent", "estimator", "metrics", "rows", "reason", box=None
    )
    for v in versions:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.metrics.items())[:3])
        table.add_row(
            v.model_name,
            str(v.version),
            v.status,
            str(v.parent_version or "-"),
            v.estimator or "-",
            metrics or "-",
            str(v.training_rows or "-"),
            (v.reason or "")[:60],
        )
    out.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Argument(help="Version (default: champion).")] = None,
) -> None:
    """Show one version in full (JSON), the champion by default.

    Example: streammon models show credit 3
    """
    settings = _settings_or_exit(ctx)
    try:
        reg = _registry(settings)
        v = reg.get(model, version) if version is not None else reg.champion(model)
    except StreammonError as exc:
        raise _fail(exc) from exc
    if v is None:
        err.print(f"[red]error:[/red] {model} has no champion")
        raise typer.Exit(1)
    sys.stdout.write(json.dumps(_version_row(v), indent=2, sort_keys=True) + "\n")


@models_app.command("register")
def models_register(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    path: Annotated[Path, typer.Argument(help="A skops file of a fitted scikit-learn model.")],
    candidate: Annotated[bool, typer.Option(help="Register as candidate, not champion.")] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "registered from a file",
) -> None:
    """Register a model trained elsewhere (idempotent: the same file gives the same version).

    Example: streammon models register credit model.skops
    """
    from streaming.artifacts import load_model, sha256_of

    settings = _settings_or_exit(ctx)
    try:
        data = path.read_bytes()
        estimator = load_model(data, expected_sha256=sha256_of(data))
        v = _registry(settings).register(
            model,
            data,
            status="candidate" if candidate else "champion",
            estimator=type(estimator).__name__,
            reason=reason,
        )
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {path}: {exc}")
        raise typer.Exit(1) from exc
    except StreammonError as exc:
        raise _fail(exc) from exc
    out.print(f"{model} v{v.version} {v.status} ({v.artifact_uri})")


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    force: Annotated[bool, typer.Option(help="Also promote a rejected version.")] = False,
) -> None:
    """Make a version the champion (producers hot-swap to it).

    Example: streammon models promote credit 4
    """
    settings = _settings_or_exit(ctx)
    try:
        v = _registry(settings).promote(model, version, reason="promoted by hand", force=force)
    except StreammonError as exc:
        raise _fail(exc) from exc
    out.print(f"{model} v{v.version} is champion")


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
) -> None:
    """Restore the previous champion (the current one becomes rolled_back).

    Example: streammon models rollback credit
    """
    settings = _settings_or_exit(ctx)
    try:
        v = _registry(settings).rollback(model, reason="rolled back by hand")
    except StreammonError as exc:
        raise _fail(exc) from exc
    out.print(f"{model} v{v.version} is champion again")


# ---- alerts ---------------------------------------------------------------------------------
@alerts_app.command("tail")
def alerts_tail(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for more.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List alert transitions (firing/resolved) from the alerts topic.

    Example: streammon alerts tail --follow
    """
    from consumers.alerts import tail_alerts

    settings = _settings_or_exit(ctx)
    try:
        code = tail_alerts(settings, follow=follow, as_json=as_json, console=out)
    except StreammonError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


@alerts_app.command("forward")
def alerts_forward(
    ctx: typer.Context,
    alertmanager_url: Annotated[
        str | None, typer.Option(help="Alertmanager base URL (STREAMMON_ALERTMANAGER_URL).")
    ] = None,
    webhook: Annotated[
        list[str] | None, typer.Option(help="JSON webhook URL; repeat for several.")
    ] = None,
) -> None:
    """Deliver alert transitions to Alertmanager (API v2) and webhooks, at least once.

    Example: streammon alerts forward --alertmanager-url http://127.0.0.1:9093
    """
    from consumers.alerts import run_forwarder
    from consumers.service import GracefulStop

    settings = _settings_or_exit(ctx)
    stop = GracefulStop()
    stop.install()
    try:
        code = run_forwarder(
            settings,
            alertmanager_url=alertmanager_url or settings.alertmanager_url,
            webhook_urls=list(webhook or settings.alert_webhook_urls),
            stop=stop,
        )
    except StreammonError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


# ---- demo -----------------------------------------------------------------------------------
@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int | None, typer.Option(help="Applications to stream.")] = None,
    drift_at: Annotated[int | None, typer.Option(help="Position of the concept change.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the whole run (deterministic).")] = 7,
    rate: Annotated[float | None, typer.Option(help="Applications per second.")] = None,
    quick: Annotated[bool, typer.Option(help="About one minute, for smoke tests.")] = False,
    report_dir: Annotated[Path, typer.Option(help="Where the HTML report goes.")] = Path("reports"),
    live: Annotated[
        bool | None, typer.Option("--live/--no-live", help="Live view (default: on a TTY).")
    ] = None,
) -> None:
    """Run the whole loop on a credit-approval stream with a concept change, then write a
    report with plots and baselines.

    Example: streammon demo --quick
    """
    from consumers.demo import run_demo

    settings = _settings_or_exit(ctx)
    try:
        code = run_demo(
            settings,
            events=events,
            drift_at=drift_at,
            seed=seed,
            rate=rate,
            quick=quick,
            report_dir=report_dir,
            live=live,
        )
    except StreammonError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


# ---- local stack ----------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def services(
    action: Annotated[str, typer.Argument(help="up, down, status or env")],
    with_alertmanager: Annotated[bool, typer.Option(help="Also run Alertmanager.")] = False,
) -> None:
    """Run the local development stack (Kafka KRaft, Redis) on loopback, without Docker.

    Example: eval "$(streammon services env)"
    """
    from consumers import devstack

    argv = [action] + (["--with-alertmanager"] if with_alertmanager else [])
    raise typer.Exit(devstack.main(argv))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StreammonError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
