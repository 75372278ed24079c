"""The ``socmap`` command line. Each command is a thin wrapper over a library function."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from socmap.train_config import load_config, option_help

app = typer.Typer(
    help="socmap: soil organic carbon maps from a differentiable CLM5 model with learned parameters.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _fail(exc: BaseException, code: int = 2) -> typer.Exit:
    """Print a user error (no traceback) and return the Exit to raise."""
    from rich.markup import escape

    console.print("[red]error:[/red] " + escape(str(exc)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
def demo(
    data_dir: Path = typer.Option(Path("data/synthetic"), "--data-dir", help="Where the synthetic twin lives (built if missing)."),
    run: Path = typer.Option(Path("runs/synthetic-kan"), "--run", help="The run folder (trained if missing)."),
    port: int = typer.Option(5006, "--port"),
    address: str = typer.Option("127.0.0.1", "--address"),
    show: bool = typer.Option(False, "--show/--no-show", help="Open a browser tab."),
    serve_app: bool = typer.Option(True, "--serve/--no-serve", help="Serve the dashboard at the end."),
) -> None:
    """The main job: synthetic twin → train the KAN (5-fold spatial CV) → map CONUS → dashboard.

    Each step is skipped when its output exists, so a second `socmap demo` starts in seconds.
    """
    import time as _time

    t0 = _time.perf_counter()
    if not (data_dir / "truth.json").exists():
        from socmap.data.synthetic import SynthConfig, write_synthetic

        console.rule("1/4 synthetic CONUS twin")
        write_synthetic(data_dir, SynthConfig(), overwrite=data_dir.exists(), progress=True)
    else:
        console.print(f"1/4 synthetic twin: using {data_dir}")
    if not (run / "run.json").exists():
        from socmap.train import train as run_training

        console.rule("2/4 training the KAN hybrid (5-fold 2° block CV)")
        record = run_training(load_config(data_dir=str(data_dir)), run, resume=run.exists())
        mean = record["metrics"]["cv"]["mean"]
        console.print(f"held-out NSE {mean['nse']:.3f}, NSE(log) {mean['nse_log']:.3f}")
        for name, v in record["metrics"].get("param_recovery", {}).items():
            console.print(f"  recovery of {name}: R² {v['r2']:.3f}")
    else:
        console.print(f"2/4 trained run: using {run}")
    if not (run / "maps.zarr").exists():
        from socmap.mapping import MapOptions, map_run, summary_lines

        console.rule("3/4 mapping CONUS")
        for line in summary_lines(map_run(run, MapOptions(ensemble=True))):
            console.print(line)
    else:
        console.print(f"3/4 maps: using {run / 'maps.zarr'}")
    console.print(f"ready in {_time.perf_counter() - t0:.0f} s")
    if serve_app:
        console.rule("4/4 dashboard")
        serve(run=[run], port=port, address=address, show=show)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (must not exist unless --overwrite)."),
    resolution: float = typer.Option(0.25, "--resolution", help="Grid resolution in degrees."),
    sites: int = typer.Option(2000, "--sites", help="Number of synthetic SOC profiles."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the output is a deterministic function of it."),
    noise: float = typer.Option(0.1, "--noise", help="SD of the multiplicative log-normal noise on SOC (0 = none)."),
    params: str = typer.Option("four", "--params", help="Target parameters: four, fifteen, all, or comma-separated names."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Write the synthetic CONUS twin: covariate cube, true parameter fields, sites and SOC profiles."""
    from socmap.data.synthetic import SynthConfig, write_synthetic

    try:
        config = SynthConfig(resolution_deg=resolution, n_sites=sites, seed=seed, noise=noise, params=params)
        config.targets()
        meta = write_synthetic(out, config, overwrite=overwrite, progress=True)
    except (FileExistsError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    c = meta["counts"]
    console.print(
        f"wrote {out}: grid {c['grid_shape'][0]}×{c['grid_shape'][1]} ({c['land_cells']} land cells), "
        f"{c['sites_written']} sites / {c['layers']} layers "
        f"({c['sites_dropped_nonfinite']} dropped), targets {', '.join(meta['targets'])}, "
        f"{meta['timings_s']['total']:.1f} s"
    )

def _config_option(field: str) -> Any:
    """A ``socmap train`` flag for the TrainConfig field ``field``: None unless given (the config
    file's value or TrainConfig's default applies), help text and default shown from the field."""
    return typer.Option(None, "--" + field.replace("_", "-"), help=option_help(field), show_default=False)


@app.command()
def train(
    out: Path = typer.Option(Path("runs/synthetic-kan"), "--out", help="Run folder (config, checkpoints, run.json)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of training options (CLI flags override it)."),
    data: str | None = _config_option("data"),
    data_dir: Path | None = _config_option("data_dir"),
    encoder: str | None = _config_option("encoder"),
    params: str | None = _config_option("params"),
    folds: int | None = _config_option("folds"),
    split: str | None = _config_option("split"),
    epochs: int | None = _config_option("epochs"),
    lr: float | None = _config_option("lr"),
    loss: str | None = _config_option("loss"),
    seed: int | None = _config_option("seed"),
    device: str | None = _config_option("device"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
) -> None:
    """Train the hybrid model (or a baseline) with spatial cross-validation."""
    from socmap.train import train as run_training

    try:
        cfg = load_config(
            config, data=data, data_dir=str(data_dir) if data_dir else None, encoder=encoder, params=params,
            folds=folds, split=split, epochs=epochs, lr=lr, loss=loss, seed=seed, device=device,
        )
        record = run_training(cfg, out, resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        raise _fail(exc) from None
    m = record["metrics"]
    table = Table(title=f"run {out}: held-out skill ({cfg.split}, {cfg.folds} folds)")
    for col in ("fold", "NSE", "NSE (log)", "RMSE g C m-3", "r"):
        table.add_column(col)
    for f in m["cv"]["folds"]:
        table.add_row(str(f["fold"]), f"{f['nse']:.3f}", f"{f['nse_log']:.3f}", f"{f['rmse']:.0f}", f"{f['r']:.3f}")
    mean = m["cv"]["mean"]
    table.add_row("mean", f"{mean['nse']:.3f}", f"{mean['nse_log']:.3f}", f"{mean['rmse']:.0f}", f"{mean['r']:.3f}")
    console.print(table)
    if "param_recovery" in m:
        rec = Table(title="parameter recovery on held-out sites")
        for col in ("parameter", "R²", "r"):
            rec.add_column(col)
        for name, v in m["param_recovery"].items():
            rec.add_row(name, f"{v['r2']:.3f}", f"{v['corr']:.3f}")
        console.print(rec)
    console.print(f"wrote {out / 'run.json'} in {record['timing']['total_s']:.0f} s")


def _allow_partial_option() -> Any:
    return typer.Option(False, "--allow-partial", help="Use the fold models that load when some are missing or "
                        "damaged (recorded in the output); without it such a run is an error.")


@app.command()
def predict(
    run: Path = typer.Option(..., "--run", help="A finished run folder (runs/NAME): hybrid or baseline (rf, nn)."),
    points: Path = typer.Option(..., "--points", help="CSV with columns lon, lat, depth_m."),
    out: Path = typer.Option(..., "--out", help="Output CSV (input columns + status, SOC, stocks, hybrid parameters); a record goes to OUT.json."),
    batch_size: int = typer.Option(8192, "--batch-size", help="Points per batch (memory grows with it, not with the file)."),
    allow_partial: bool = _allow_partial_option(),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Rows with missing or out-of-range values get a status instead of stopping the run."),
) -> None:
    """SOC (and, for a hybrid run, parameters) at points, from the run's fold ensemble and covariate cube."""
    from socmap.predict import PointsError, predict_file
    from socmap.runs import RunError

    try:
        record = predict_file(run, points, out, batch=batch_size, allow_partial=allow_partial, skip_bad_rows=skip_bad_rows)
    except (PointsError, RunError, ValueError, FileNotFoundError, PermissionError) as exc:
        raise _fail(exc) from None
    counts = record["status_counts"]
    console.print(f"wrote {out}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                  + f" ({record['points_per_s'] or 0:,.0f} points/s)", highlight=False)
    if record["partial_ensemble"]:
        console.print(f"[yellow]partial ensemble:[/yellow] {len(record['fold_models'])} fold models used; missing or "
                      f"damaged: {', '.join(record['fold_models_missing'])} (recorded in {out}.json)", highlight=False)


@app.command("map")
def map_(
    run: Path = typer.Option(..., "--run", help="A finished run folder (runs/NAME); the store goes to runs/NAME/maps.zarr."),
    resolution: float | None = typer.Option(None, "--resolution", help="Grid resolution in degrees (default: the cube's)."),
    chunks: int = typer.Option(256, "--chunks", help="Cells per chunk side (chunks × chunks cells per task)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Existing Dask scheduler (tcp://host:port) or 'synchronous'; default: a LocalCluster."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Solve every fold model; store the mean and the standard deviation."),
    compare: Path | None = typer.Option(None, "--compare", help="Another mapped run (runs/OTHER): add this-minus-other stock differences."),
    workers: int | None = typer.Option(None, "--workers", help="LocalCluster worker processes (default: CPU count)."),
    method: str = typer.Option("structured", "--method", help="Steady-state solver: structured (fast) | dense (reference)."),
    allow_partial: bool = _allow_partial_option(),
) -> None:
    """Map a trained run (hybrid or baseline) over the grid into its Zarr run store (resumable; see socmap.mapping)."""
    from socmap.mapping import MappingError, map_run, summary_lines
    from socmap.runs import RunError
    from socmap.store import StoreError

    try:
        record = map_run(run, resolution=resolution, chunks=chunks, scheduler=scheduler, ensemble=ensemble,
                         compare=str(compare) if compare else None, workers=workers, method=method,
                         allow_partial=allow_partial)
    except (MappingError, StoreError, RunError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt as exc:
        console.print("[yellow]interrupted:[/yellow] finished chunks are kept; re-run the same command to resume")
        raise typer.Exit(130) from exc
    for line in summary_lines(record):
        console.print(line)


@app.command()
def export(
    run: Path = typer.Option(..., "--run", help="A mapped run folder (runs/NAME with maps.zarr)."),
    layers: str = typer.Option(..., "--layers", help="Comma-separated store variables (e.g. tau4s3,soc_stock_0_30cm), soc_layerJ, or 'all'."),
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    fmt: str = typer.Option("cog", "--format", help="cog (Cloud-Optimised GeoTIFF with overviews) | gtiff."),
    crs: str = typer.Option("EPSG:4326", "--crs", help="EPSG:4326 (the store's grid) | EPSG:5070 (CONUS Albers, reprojected)."),
    multiband: bool = typer.Option(False, "--multiband", help="One multi-band file instead of one file per layer."),
) -> None:
    """Export store layers as GeoTIFF / COG files."""
    from socmap.export import ExportError, export_layers
    from socmap.store import StoreError

    try:
        files = export_layers(run, layers, out, fmt=fmt, crs=crs, multiband=multiband)
    except (ExportError, StoreError, FileNotFoundError, FileExistsError, PermissionError, ValueError) as exc:
        raise _fail(exc) from None
    total = sum(f.stat().st_size for f in files)
    console.print(f"wrote {len(files)} file(s) to {out} ({total / 1e6:.1f} MB)")


covariates_app = typer.Typer(help="Covariate cubes: build the real CONUS cube from package-shipped data.", no_args_is_help=True)
app.add_typer(covariates_app, name="covariates")


@covariates_app.command("build")
def covariates_build(
    source: str = typer.Option("real-conus", "--source", help="Cube to build: real-conus (ERA5 climate, MODIS land cover, elevation)."),
    resolution: float = typer.Option(0.25, "--resolution", help="Grid resolution in degrees (0.25 or 0.05; any multiple of 0.05 works)."),
    out: Path = typer.Option(Path("data/real-conus"), "--out", help="Output folder (cube.zarr + realcube.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Build a covariate cube on the CONUS grid (the twin's grid), written atomically."""
    from socmap.data.realcube import RealDataMissing, write_real_cube

    if source != "real-conus":
        console.print(f"[red]error:[/red] unknown --source {source!r}; available: real-conus (the synthetic twin: `socmap synth`)")
        raise typer.Exit(2)
    try:
        meta = write_real_cube(out, resolution, overwrite=overwrite)
    except RealDataMissing as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3) from exc
    except (FileExistsError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"real CONUS cube {resolution:g} deg -> {out}")
    for col in ("covariate", "units", "min", "max"):
        table.add_column(col)
    for name, (lo, hi) in meta["covariate_range"].items():
        table.add_row(name, meta["covariates"][name]["units"], f"{lo:.4g}", f"{hi:.4g}")
    console.print(table)
    console.print(f"grid {meta['grid_shape'][0]} x {meta['grid_shape'][1]}, {meta['land_cells']} land cells, "
                  f"regridding {meta['regridding']}, nearest fills {meta['filled_from_nearest']}; {meta['seconds']:.1f} s")


@app.command()
def serve(
    run: list[Path] = typer.Option([], "--run", help="Run folder(s) with run.json and maps.zarr (repeatable; default: every runs/*)."),
    port: int = typer.Option(5006, "--port", help="Port of the dashboard server."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on."),
    show: bool = typer.Option(True, "--show/--no-show", help="Open a browser tab."),
    allow_partial: bool = _allow_partial_option(),
) -> None:
    """Serve the Panel dashboard (maps, differences, parameter fields, KAN curves, sites, run summary)."""
    from socmap.runs import RunError, open_run

    try:  # a damaged run is one clear error before the server starts, not a blank page per visitor
        for r in run:
            open_run(r, allow_partial=allow_partial)
    except RunError as exc:
        raise _fail(exc) from None
    try:
        from dashboards.app import serve as serve_dashboard
    except ImportError as exc:
        console.print(f"[red]error:[/red] the dashboard needs the `dashboard` extra: pip install 'socmap\\[dashboard]' ({exc})")
        raise typer.Exit(2) from exc
    url = f"http://{address}:{port}/"
    console.print(f"socmap dashboard: {url}  (runs: {', '.join(r.name for r in run) or 'runs/*'}; Ctrl-C stops)")
    try:
        serve_dashboard(run, port=port, address=address, show=show)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


from socmap.cli_profiles import profiles_app  # noqa: E402  (kept beside its registration)
app.add_typer(profiles_app, name="profiles")


if __name__ == "__main__":  # pragma: no cover
    app()
