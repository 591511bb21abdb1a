"""The ``mlflow-agent`` command line."""

from __future__ import annotations

import logging
import sys

import click

from .errors import AgentError

logger = logging.getLogger(__name__)


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """Operate mlflow-agent: check configs, list plugins, run the quickstart."""
    level = logging.ERROR if quiet else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="agent.yaml to use (default: MLFLOW_AGENT_CONFIG, ./agent.yaml, built-ins).",
)
def quickstart(config_path: str | None) -> None:
    """Train a digit classifier, register it, promote it and load it back."""
    from .agent import MLFlowAgent
    from .quickstart import run_quickstart

    try:
        agent = (
            MLFlowAgent.from_yaml(config_path) if config_path else MLFlowAgent()
        )
        result = run_quickstart(agent, report=click.echo)
        agent.flush()
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc

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
        click.echo(f"open the MLflow UI on this store: mlflow ui --backend-store-uri {uri}")
    else:
        click.echo(f"open the MLflow UI: {uri}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
