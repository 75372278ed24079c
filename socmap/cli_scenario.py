"""The ``socmap scenario`` command (registered on the app in :mod:`socmap.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def scenario_command(
    run: Path = typer.Option(..., "--run", help="A mapped run folder (runs/NAME with maps.zarr, from `socmap map`)."),
    name: str | None = typer.Option(None, "--name", help="Scenario name: output in runs/NAME/scenarios/<name> (default: the file's name)."),
    warming_c: float | None = typer.Option(None, "--warming-c", help="Air-temperature change, °C, every month."),
    precip_pct: float | None = typer.Option(None, "--precip-pct", help="Precipitation change, %, every month (e.g. -10)."),
    hold_inputs: bool | None = typer.Option(None, "--hold-inputs/--free-inputs",
                                            help="Keep carbon inputs (and their depth profile) at present values "
                                                 "(default: inputs follow the climate via the Miami NPP response)."),
    file: Path | None = typer.Option(None, "--file", help="Scenario YAML (per-month warming_c / precip_pct, see socmap.scenario); flags override it."),
    years: int | None = typer.Option(None, "--years", help="Also run an annual transient of this many years from the present steady state."),
    ramp_years: int | None = typer.Option(None, "--ramp-years", help="Years over which the forcing moves linearly from present to scenario (0 = step)."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also map elasticities d ln stock(0-100 cm) / d ln θ and the dominant process, under the scenario climate (a zero scenario gives today's)."),
    resolution: float | None = typer.Option(None, "--resolution", help="Grid resolution in degrees; must be the present map's (default)."),
    chunks: int = typer.Option(64, "--chunks", help="Cells per window side (one task per window)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Existing Dask scheduler (tcp://host:port) or 'synchronous'; default: a LocalCluster."),
    workers: int | None = typer.Option(None, "--workers", help="LocalCluster worker processes (default: CPU count)."),
) -> None:
    """Map a climate scenario's steady state (and optionally a transient and sensitivities) for a mapped run."""
    from socmap.scenario import Scenario, ScenarioError
    from socmap.scenario_mapping import ScenarioOptions, ScenarioRunError, run_scenario, summary_lines
    from socmap.store import StoreError

    flags = {"name": name, "warming_c": warming_c, "precip_pct": precip_pct, "hold_inputs": hold_inputs,
             "years": years, "ramp_years": ramp_years}
    try:
        if file is not None:
            scenario = Scenario.from_yaml(file, **flags)
        else:
            if name is None:
                raise ScenarioError("give --name NAME (or a scenario --file with a name)")
            from pydantic import ValidationError

            try:
                scenario = Scenario(**{k: v for k, v in flags.items() if v is not None})
            except ValidationError as exc:
                raise ScenarioError(str(exc)) from exc
        if scenario.ramp_years and not scenario.years:
            raise ScenarioError("--ramp-years needs --years (the length of the transient)")
        record = run_scenario(run, scenario, ScenarioOptions(resolution=resolution, chunks=chunks, sensitivity=sensitivity,
                                                               scheduler=scheduler, workers=workers))
    except (ScenarioError, ScenarioRunError, StoreError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:
        console.print("[yellow]interrupted:[/yellow] finished windows are kept; re-run the same command to resume")
        raise typer.Exit(130) from exc
    for line in summary_lines(record):
        console.print(line)
