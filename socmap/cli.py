"""The ``socmap`` command line. Each command is a thin wrapper over a library function."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="socmap: soil organic carbon maps from a differentiable CLM5 model with learned parameters.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def info() -> None:
    """Versions, the 21-parameter table and where data lives."""
    import importlib.metadata as md

    import socmap
    from socmap.clm5.parameters import PARAMETERS

    versions = Table(title="socmap environment", show_header=False)
    versions.add_row("socmap", socmap.__version__)
    versions.add_row("python", platform.python_version())
    for pkg in ("torch", "numpy", "xarray", "dask", "zarr", "panel", "holoviews", "geoviews"):
        try:
            versions.add_row(pkg, md.version(pkg))
        except md.PackageNotFoundError:
            versions.add_row(pkg, "not installed")
    versions.add_row("package dir", str(Path(socmap.__file__).parent))
    versions.add_row("runs dir", str(Path("runs").resolve()))
    console.print(versions)

    params = Table(title="CLM5 parameters (bounds: BINN; default: CLM5)")
    for col in ("#", "name", "unit", "lower", "upper", "default", "description"):
        params.add_column(col)
    for p in PARAMETERS:
        params.add_row(str(p.index), p.name, p.unit, f"{p.lower:g}", f"{p.upper:g}", f"{p.default:g}", p.description)
    console.print(params)


@app.command()
def demo() -> None:
    """The main job. For now: the CLM5 steady state at four example sites (profiles, stocks, diagnostics)."""
    import torch

    from socmap.clm5 import bulk_diagnostics, prepare_forcing, soc_nodes, standard_stocks, steady_state
    from socmap.clm5.grid import NODE_M
    from socmap.clm5.parameters import midrange_theta
    from socmap.example import example_forcing

    names, forcing = example_forcing()
    theta = midrange_theta(len(names))
    prepared = prepare_forcing(forcing)
    pools = steady_state(theta, prepared)
    soc = soc_nodes(pools)
    stocks = standard_stocks(soc)
    diag = bulk_diagnostics(theta, prepared, pools)

    table = Table(title="CLM5 steady-state SOC (g C m-3) at mid-range parameters (p = 0.5)")
    table.add_column("depth (m)")
    for n in names:
        table.add_column(n)
    for j in range(0, 12):
        table.add_row(f"{NODE_M[j]:.2f}", *[f"{float(soc[i, j]):,.0f}" for i in range(len(names))])
    console.print(table)
    summary = Table(title="Stocks and bulk diagnostics")
    summary.add_column("quantity")
    for n in names:
        summary.add_column(n)
    for key, vals in {**stocks, **{k: v for k, v in diag.items() if v.dim() == 1}}.items():
        summary.add_row(key, *[f"{float(v):.3g}" for v in vals])
    console.print(summary)
    torch.set_printoptions(precision=4)


if __name__ == "__main__":  # pragma: no cover
    app()
