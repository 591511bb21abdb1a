"""The ``mlflow-agent`` command line.

Exit codes: 0 when everything is fine, 1 when a check failed or the agent
reported a problem (one line on stderr, no traceback; ``-vv`` logs it), 2 for a
usage error. Commands that a script may read take ``--json``.

The heavy parts (MLflow, the agent, plugins) are imported inside the commands, so
``mlflow-agent --help`` answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .errors import AgentError
from .logs import cli_level, configure_cli_logging

if TYPE_CHECKING:
    from .agent import MLFlowAgent
    from .checks import ConfigReport
    from .config import AgentConfig

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_PROBLEM = 1
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 88}


class AgentGroup(click.Group):
    """Turns any :class:`AgentError` into one clean line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentError as exc:
            logger.debug("The error below was raised here", exc_info=True)
            raise click.ClickException(_one_line(exc)) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@click.group(cls=AgentGroup, context_settings=CONTEXT)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.version_option(package_name="mlflow-agent-core", prog_name="mlflow-agent")
def main(verbose: int, quiet: bool) -> None:
    """Operate mlflow-agent: run the quickstart, list plugins, check configs,
    probe servers, replay the spool and manage registered models."""
    configure_cli_logging(cli_level(verbose, quiet))


def config_option(function: F) -> F:
    """The ``--config PATH`` option shared by commands that read agent.yaml."""
    option = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="agent.yaml to use (default: MLFLOW_AGENT_CONFIG, ./agent.yaml, "
        "built-in defaults).",
    )
    return option(function)


def json_option(function: F) -> F:
    option = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts."
    )
    return option(function)


def _load(config_path: str | None) -> AgentConfig:
    from .config import load_config

    return load_config(config_path)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _fail() -> NoReturn:
    """Exit with status 1 after the report was printed."""
    sys.exit(EXIT_PROBLEM)


@contextmanager
def _agent(config_path: str | None) -> Iterator[MLFlowAgent]:
    """An agent for one command, closed (flushed) when the command ends."""
    from .agent import MLFlowAgent

    agent = MLFlowAgent(config=_load(config_path))
    try:
        yield agent
    finally:
        MLFlowAgent.reset()


# quickstart


@main.command()
@config_option
def quickstart(config_path: str | None) -> None:
    """Train a digit classifier, register it, promote it and load it back."""
    from .agent import MLFlowAgent
    from .quickstart import run_quickstart

    agent = MLFlowAgent.from_yaml(config_path) if config_path else MLFlowAgent()
    result = run_quickstart(agent, report=click.echo)
    agent.flush()

    click.echo("")
    click.echo(f"run {result.run_id}: Pytorch_Model version {result.model_version}")
    click.echo(
        f"test accuracy {result.loaded_accuracy:.4f} from the registry, "
        f"{result.trained_accuracy:.4f} in memory, in {result.seconds:.1f} s"
    )
    if result.loaded_accuracy != result.trained_accuracy:
        raise click.ClickException("the loaded model does not match the trained one")
    uri = result.tracking_uri
    if uri.startswith("sqlite:") or uri.startswith("postgresql") or "://" not in uri:
        click.echo(
            f"open the MLflow UI on this store: mlflow ui --backend-store-uri {uri}"
        )
    else:
        click.echo(f"open the MLflow UI: {uri}")


# plugins


@main.command()
@json_option
@config_option
def plugins(as_json: bool, config_path: str | None) -> None:
    """List plugins: hooks, backends per concern, what the config selects.

    Also lists installed plugins that the allow/block lists keep out. Exits 1
    when a plugin is broken or a selected backend is missing.
    """
    from .checks import check_config

    report = check_config(_load(config_path))
    listing = _plugin_listing(report)
    if as_json:
        _print_json(listing)
    else:
        _print_plugins(listing)
    if listing["errors"]:
        _fail()


def _plugin_listing(report: ConfigReport) -> dict[str, Any]:
    from .plugins import BUILTIN

    errors = [str(error) for error in report.errors]
    if report.host is None:
        return {
            "config": report.config.source,
            "plugins": _unloaded_entry_points(),
            "selected": {},
            "skipped": [],
            "errors": errors,
        }

    by_plugin: dict[str, dict[str, list[str]]] = {}
    for registration in report.host.registrations():
        concerns = by_plugin.setdefault(registration.plugin.name, {})
        concerns.setdefault(registration.concern, []).append(registration.name)

    plugins = [
        {
            **_plugin_fields(info),
            "builtin": info.distribution == BUILTIN,
            "hooks": list(info.hooks),
            "strategies": by_plugin.get(info.name, {}),
        }
        for info in report.host.plugins()
    ]
    return {
        "config": report.config.source,
        "plugins": plugins,
        "selected": _selected(report),
        "skipped": [_plugin_fields(info) for info in report.host.skipped],
        "errors": errors,
    }


def _plugin_fields(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "entry_point": info.entry_point,
    }


def _selected(report: ConfigReport) -> dict[str, Any]:
    selected: dict[str, Any] = {}
    for concern, check in report.backends.items():
        registration = check.registration
        plugin = None if registration is None else registration.plugin
        selected[concern] = {
            "backend": check.backend,
            "plugin": None if plugin is None else plugin.name,
            "distribution": None if plugin is None else plugin.distribution,
            "version": None if plugin is None else plugin.version,
            "options_checked": check.checked,
            "error": None if check.error is None else str(check.error),
        }
    return selected


def _unloaded_entry_points() -> list[dict[str, Any]]:
    from importlib import metadata

    from .plugins import ENTRY_POINT_GROUP

    found = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        found.append(
            {
                "name": entry_point.name,
                "distribution": dist.name if dist else None,
                "version": dist.version if dist else None,
                "entry_point": f"{entry_point.name} = {entry_point.value}",
                "loaded": False,
            }
        )
    return found


def _print_plugins(listing: Mapping[str, Any]) -> None:
    click.echo(f"Configuration: {listing['config']}")
    click.echo("")
    for plugin in listing["plugins"]:
        click.echo(_plugin_title(plugin))
        if plugin.get("loaded") is False:
            click.echo("    not loaded (see the error below)")
            continue
        click.echo(f"    hooks: {', '.join(plugin['hooks']) or 'none'}")
        for concern, names in plugin["strategies"].items():
            click.echo(f"    {concern}: {', '.join(names)}")

    if listing["selected"]:
        click.echo("")
        click.echo("Selected backends:")
        for concern, chosen in listing["selected"].items():
            click.echo(f"    {concern}: {chosen['backend']} ({_provider(chosen)})")
    if listing["skipped"]:
        click.echo("")
        click.echo("Not loaded (plugins allow/block lists):")
        for plugin in listing["skipped"]:
            click.echo(f"    {_plugin_title(plugin).strip()}")
    for error in listing["errors"]:
        click.echo(f"error: {error}", err=True)


def _provider(chosen: Mapping[str, Any]) -> str:
    from .plugins import BUILTIN

    if chosen["plugin"] is None:
        return "not available, see the error below"
    if chosen["distribution"] == BUILTIN:
        return "built-in"
    version = f" {chosen['version']}" if chosen["version"] else ""
    return f"plugin {chosen['plugin']}, {chosen['distribution']}{version}"


def _plugin_title(plugin: Mapping[str, Any]) -> str:
    if plugin.get("builtin"):
        return f"  {plugin['name']} (built-in)"
    version = f" {plugin['version']}" if plugin.get("version") else ""
    return f"  {plugin['name']} ({plugin['distribution']}{version})"


# config


@main.group(name="config")
def config_group() -> None:
    """Check or show the agent configuration (agent.yaml)."""


@config_group.command(name="check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@json_option
def config_check(path: str | None, as_json: bool) -> None:
    """Validate PATH (default: MLFLOW_AGENT_CONFIG, ./agent.yaml, built-ins).

    Loads the plugins it allows, resolves every backend and has each one check
    its options, without contacting any server. Prints each problem as
    file:line:column: message and exits 1 when there is one.
    """
    from .checks import check_config
    from .errors import ConfigError

    try:
        config = _load(path)
    except ConfigError as exc:
        _report_config_errors(path or exc.source or "agent.yaml", [exc], as_json)
        return
    report = check_config(config)
    if report.errors:
        _report_config_errors(config.source, report.errors, as_json)
        return

    unchecked = [check.concern for check in report.unchecked]
    if as_json:
        _print_json(
            {
                "config": config.source,
                "ok": True,
                "errors": [],
                "backends": {c: b.backend for c, b in report.backends.items()},
                "unchecked": unchecked,
            }
        )
        return
    backends = ", ".join(f"{c}: {b.backend}" for c, b in report.backends.items())
    click.echo(f"{config.source}: ok ({backends})")
    for concern in unchecked:
        click.echo(
            f"note: the {concern} backend cannot check its options without "
            "starting; they are checked when the agent starts"
        )


def _report_config_errors(
    source: str, errors: Sequence[AgentError], as_json: bool
) -> None:
    if as_json:
        _print_json(
            {
                "config": source,
                "ok": False,
                "errors": [_error_fields(error) for error in errors],
            }
        )
    else:
        for error in errors:
            click.echo(_one_line(error), err=True)
    _fail()


def _error_fields(error: AgentError) -> dict[str, Any]:
    return {
        "type": type(error).__name__,
        "message": _one_line(error),
        "file": getattr(error, "source", None),
        "line": getattr(error, "line", None),
        "column": getattr(error, "column", None),
    }


@config_group.command(name="show")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@json_option
def config_show(path: str | None, as_json: bool) -> None:
    """Print the resolved configuration with the source of every value.

    Values are shown after ${VAR} interpolation and with the defaults filled in;
    secrets (secret-looking keys, URI passwords, values of secret-looking
    environment variables) are masked.
    """
    from .redaction import redact_tree

    config = _load(path)
    shown = redact_tree(config.data)
    origins = dict(_origins(config, config.data))
    if as_json:
        _print_json({"config": config.source, "values": shown, "origins": origins})
        return
    click.echo(f"# {config.source}")
    for line in _yaml_lines(shown, origins):
        click.echo(line)


def _origins(
    config: AgentConfig, data: Any, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, str]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _origins(config, value, (*path, key))
        return
    yield ".".join(path), config.provenance(path)


def _yaml_lines(shown: Mapping[str, Any], origins: Mapping[str, str]) -> list[str]:
    rows: list[tuple[str, str]] = []
    _yaml_rows(shown, origins, (), rows)
    width = min(max((len(text) for text, _ in rows), default=0), 60)
    return [
        f"{text:<{width}}  # {origin}" if origin else text for text, origin in rows
    ]


def _yaml_rows(
    data: Mapping[str, Any],
    origins: Mapping[str, str],
    path: tuple[str, ...],
    rows: list[tuple[str, str]],
) -> None:
    indent = "  " * len(path)
    for key, value in data.items():
        here = (*path, key)
        if isinstance(value, Mapping) and value:
            rows.append((f"{indent}{key}:", ""))
            _yaml_rows(value, origins, here, rows)
        else:
            text = f"{indent}{key}: {_yaml_scalar(value)}"
            rows.append((text, origins.get(".".join(here), "")))


def _yaml_scalar(value: Any) -> str:
    import yaml

    dumped: str = yaml.safe_dump(
        value, default_flow_style=True, width=10**6, allow_unicode=True
    )
    return dumped.strip().removesuffix("...").strip()


# doctor


@main.command()
@json_option
@config_option
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
    help="Seconds to wait for each server request.",
)
def doctor(as_json: bool, config_path: str | None, timeout: float) -> None:
    """Check the config, probe the tracking and registry servers, count the spool.

    Reports whether each server is reachable, its MLflow version, whether it
    accepts the credentials and offers a model registry, and how many records
    wait in the spool. Exits 1 on any failure.
    """
    from .doctor import FAIL, DoctorReport, Finding, run_doctor
    from .errors import ConfigError

    try:
        config = _load(config_path)
    except ConfigError as exc:
        # Still a report: a script reading --json gets the reason in the usual shape.
        report = DoctorReport(config_path or exc.source or "agent.yaml")
        report.findings.append(Finding("config", FAIL, _one_line(exc)))
    else:
        report = run_doctor(config, timeout=timeout)
    if as_json:
        _print_json(report.as_dict())
    else:
        click.echo(f"Configuration: {report.source}")
        for finding in report.findings:
            status = finding.status.upper()
            click.echo(f"  {status:<4}  {finding.check:<9} {finding.detail}")
    if not report.ok:
        _fail()


# sync


@main.command()
@click.option(
    "--spool-dir", type=click.Path(file_okay=False), default=None,
    help="Spool root (default: tracking.spool_dir of the config, else "
    "~/.cache/mlflow-agent/spool).",
)
@click.option(
    "--tracking-uri", default=None,
    help="Send what was spooled for this URI (default: the configured one).",
)
@click.option(
    "--all", "every_uri", is_flag=True,
    help="Send what was spooled for every tracking URI in the spool.",
)
@click.option(
    "--give-up-after", type=click.FloatRange(min=0), default=30.0,
    show_default=True,
    help="Seconds to keep retrying a server that stops answering mid-way.",
)
@json_option
@config_option
def sync(
    spool_dir: str | None,
    tracking_uri: str | None,
    every_uri: bool,
    give_up_after: float,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Send what the tracking backend spooled while the server was unreachable.

    Shows a progress bar and a summary; exits 1 when anything could not be
    sent (server unreachable, records refused) or is left behind.
    """
    from .doctor import spool_backlog
    from .sync import sync_spool

    if every_uri and tracking_uri is not None:
        raise click.UsageError("give --tracking-uri or --all, not both")
    root = spool_dir if spool_dir is not None else _configured_spool_dir(config_path)
    if tracking_uri is not None:
        tracking_uri = _resolved_uri(tracking_uri)
    elif not every_uri:
        tracking_uri = _configured_tracking_uri(config_path)
    total = sum(b.waiting for b in spool_backlog(root, tracking_uri))
    progress = _SyncBar(total, enabled=not as_json)
    with progress:
        report = sync_spool(
            root, tracking_uri, progress=progress.update, give_up_after=give_up_after
        )

    if as_json:
        _print_json({**asdict(report), "ok": report.ok and not report.rejected})
    else:
        _print_sync_summary(report)
    if not report.ok or report.rejected:
        _fail()


def _resolved_uri(uri: str) -> str:
    """The URI as the agent spools under it (relative sqlite paths made absolute)."""
    from .default_plugins.configuration import UriError, resolve_uri

    try:
        return resolve_uri(uri)
    except UriError as exc:
        raise click.BadParameter(str(exc), param_hint="--tracking-uri") from None


def _configured_tracking_uri(config_path: str | None) -> str:
    """The resolved ``configuration.tracking_uri`` of the configuration."""
    options = _load(config_path).data.get("configuration", {})
    return _resolved_uri(str(options.get("tracking_uri", "sqlite:///mlflow.db")))


def _configured_spool_dir(config_path: str | None) -> str | None:
    """``tracking.spool_dir`` of the configuration, when it sets one."""
    options = _load(config_path).data.get("tracking", {})
    value = options.get("spool_dir")
    return value if isinstance(value, str) and value.strip() else None


class _SyncBar:
    """A progress bar fed by :func:`sync_spool`'s progress callback."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._enabled = enabled and total > 0
        self._bar: Any = click.progressbar(
            length=max(total, 1), label="Sending spooled records", file=sys.stderr
        )
        self._done: dict[str, int] = {}

    def __enter__(self) -> _SyncBar:
        if self._enabled:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            self._bar.__exit__(*exc_info)

    def update(self, progress: Any) -> None:
        done = progress.sent + progress.rejected
        step = done - self._done.get(progress.source, 0)
        self._done[progress.source] = done
        if self._enabled and step > 0:
            self._bar.update(step)


def _print_sync_summary(report: Any) -> None:
    uris = ", ".join(report.tracking_uris) or "no tracking URI"
    if not report.replayed and not report.sent and not report.errors:
        click.echo(f"Nothing to send in {report.spool_dir}")
        return
    click.echo(f"Sent {report.sent} records to {uris}")
    if report.runs:
        count = len(report.runs)
        noun = "run" if count == 1 else "runs"
        click.echo(f"Created {count} {noun} started offline:")
        for provisional, run_id in sorted(report.runs.items()):
            click.echo(f"    {provisional} -> {run_id}")
    if report.rejected:
        click.echo(
            f"{report.rejected} records were refused by the server; they are kept in "
            f"rejected.jsonl under {report.spool_dir}"
        )
    if report.remaining:
        click.echo(f"{report.remaining} records are still waiting in the spool")
    if report.skipped:
        click.echo(f"{len(report.skipped)} spool files belong to running processes")
    for error in report.errors:
        click.echo(f"error: {_one_line(error)}", err=True)


# models


@main.group()
def models() -> None:
    """The model registry, through the configured client and registry backends."""


@models.command(name="list")
@json_option
@config_option
def models_list(as_json: bool, config_path: str | None) -> None:
    """List registered models with their aliases and latest versions."""
    with _agent(config_path) as agent:
        found = [_model_fields(model) for model in agent.client.list_models()]
    if as_json:
        _print_json(found)
        return
    if not found:
        click.echo("no registered models")
    for model in found:
        aliases = ", ".join(f"@{a}={v}" for a, v in model["aliases"].items())
        versions = [int(v["version"]) for v in model["latest_versions"]]
        latest = max(versions, default=None)
        line = f"{model['name']}"
        if latest is not None:
            line += f"  latest version {latest}"
        if aliases:
            line += f"  {aliases}"
        click.echo(line)


@models.command(name="show")
@click.argument("name")
@json_option
@config_option
def models_show(name: str, as_json: bool, config_path: str | None) -> None:
    """Show every version of the registered model NAME."""
    with _agent(config_path) as agent:
        versions = [_version_fields(v) for v in agent.client.list_versions(name)]
    if as_json:
        _print_json({"name": name, "versions": versions})
        return
    click.echo(name)
    for version in versions:
        aliases = " ".join(f"@{alias}" for alias in version["aliases"])
        click.echo(
            f"  version {version['version']:<4} {version['stage']:<10} "
            f"{version['status']:<8} run {version['run_id'] or '-'} {aliases}".rstrip()
        )


@models.command(name="promote")
@click.argument("name")
@click.argument("version")
@click.option("--alias", help="Point this alias at VERSION.")
@click.option("--stage", help="Move VERSION to this stage (Staging, Production...).")
@config_option
def models_promote(
    name: str,
    version: str,
    alias: str | None,
    stage: str | None,
    config_path: str | None,
) -> None:
    """Point an alias at, and/or move a stage to, VERSION of NAME."""
    if alias is None and stage is None:
        raise click.UsageError("give --alias, --stage or both")
    with _agent(config_path) as agent:
        promoted = agent.promote(name, version, alias=alias, stage=stage)
    # The stage as stored ('Staging'), not as typed ('staging').
    stored_stage = promoted.current_stage if stage else None
    done = [
        f"alias {alias!r}" if alias else "",
        f"stage {stored_stage!r}" if stored_stage else "",
    ]
    click.echo(
        f"{promoted.name} version {promoted.version}: "
        + " and ".join(part for part in done if part)
    )


@models.command(name="load-check")
@click.argument("uri")
@click.option(
    "--allow-pickle", is_flag=True, default=None,
    help="Allow formats that run code stored in the registry (trusted registries).",
)
@config_option
def models_load_check(
    uri: str, allow_pickle: bool | None, config_path: str | None
) -> None:
    """Load the model behind URI (models:/NAME/VERSION, models:/NAME@ALIAS...).

    Exits 1 when it cannot be loaded, including when loading it would run code
    stored in the registry and --allow-pickle was not given.
    """
    with _agent(config_path) as agent:
        model = agent.load_model(uri, allow_pickle=allow_pickle or None)
    kind = type(model)
    click.echo(f"{uri}: loaded a {kind.__module__}.{kind.__name__}")


def _model_fields(model: Any) -> dict[str, Any]:
    return {
        "name": model.name,
        "description": model.description or "",
        "aliases": {alias: str(v) for alias, v in (model.aliases or {}).items()},
        "latest_versions": [
            _version_fields(version) for version in (model.latest_versions or [])
        ],
        "tags": dict(model.tags or {}),
    }


def _version_fields(version: Any) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": str(version.version),
        "stage": version.current_stage or "None",
        "status": version.status or "",
        "aliases": list(version.aliases or []),
        "run_id": version.run_id,
        "source": version.source,
        "created": version.creation_timestamp,
        "tags": dict(version.tags or {}),
    }


if __name__ == "__main__":  # pragma: no cover
    main()
