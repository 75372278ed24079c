"""The ``socmap`` command line. Each command is a thin wrapper over a library function."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

#: Commands built only when they are run or their own help is asked for: ``socmap train`` takes
#: its options from :class:`socmap.train_config.TrainConfig`, whose import pulls in torch (~1.3 s),
#: which ``socmap --help`` and the other commands' start-up should not pay.
_LAZY_COMMANDS: dict[str, str] = {}  # name -> the builder function's name in this module


class _LazyGroup(TyperGroup):
    """The ``socmap`` group: lists lazy commands by their one-line summary without building them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built: dict[str, Any] = {}
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [n for n in _LAZY_COMMANDS if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in _LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self._built:
            builder = globals()[_LAZY_COMMANDS[cmd_name]]
            if self._listing:  # the group's help only needs the summary line
                import click

                return click.Command(cmd_name, help=builder.__doc__, short_help=builder.__doc__.split("\n")[0])
            self._built[cmd_name] = builder()
        return self._built[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    help="socmap: soil organic carbon maps from a differentiable CLM5 model with learned parameters.",
    no_args_is_help=True,
    add_completion=False,
    cls=_LazyGroup,
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


#: The demo's real run (``socmap demo``, runs/real-kan): the library defaults except a shorter
#: fit and no polish/sparsify/refit phases, so that the whole demo fits in ~10 minutes on 2 cores.
#: On the real profiles the per-fold selection keeps the plain fit in most folds anyway (README,
#: "Real data"); the measured cost in skill is in the README's "Two commands". Train the full
#: schedule with `socmap train --data real-conus --data-dir data/real-conus`.
DEMO_REAL_CONFIG: dict[str, Any] = {"data": "real-conus", "epochs": 40, "patience": 10,
                                    "kan_polish_iters": 0, "kan_sparsify_epochs": 0}


def _cpu_s() -> float:
    """User CPU seconds of this process and its finished children (the Dask workers of a map)."""
    import resource

    return sum(resource.getrusage(who).ru_utime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _demo_step(title: str, done: bool, steps: list[tuple[str, str, float, float]], build) -> Any:
    """Run ``build()`` unless ``done`` (its output exists); wall and user CPU seconds into ``steps``."""
    import time as _time

    if done:
        console.print(f"[dim]{title}: reusing the existing output[/dim]")
        steps.append((title, "reused", 0.0, 0.0))
        return None
    console.rule(title)
    t, cpu = _time.perf_counter(), _cpu_s()
    out = build()
    steps.append((title, "built", _time.perf_counter() - t, _cpu_s() - cpu))
    return out


def _run_totals(run: Path) -> dict[str, Any] | None:
    """The CONUS totals of a mapped run: from map.json, else computed from its store."""
    import json

    from socmap.store import MAP_RECORD, StoreError, open_store
    from socmap.totals import conus_totals

    record = run / MAP_RECORD
    if record.is_file():
        totals = json.loads(record.read_text()).get("totals")
        if totals:
            return totals
    try:
        return conus_totals(open_store(run))
    except (StoreError, KeyError):
        return None


@app.command()
def demo(
    data_dir: Path = typer.Option(Path("data/synthetic"), "--data-dir", help="Where the synthetic twin lives (built if missing)."),
    run: Path = typer.Option(Path("runs/synthetic-kan"), "--run", help="The synthetic run folder (trained if missing)."),
    real_dir: Path = typer.Option(Path("data/real-conus"), "--real-dir", help="Where the real 0.25° covariate cube lives (built if missing)."),
    real_run: Path = typer.Option(Path("runs/real-kan"), "--real-run", help="The real run folder (trained on the shipped NWCA 2011 + SoDaH profiles if missing)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Build, train and map the real CONUS run."),
    port: int = typer.Option(5006, "--port"),
    address: str = typer.Option("127.0.0.1", "--address"),
    show: bool = typer.Option(False, "--show/--no-show", help="Open a browser tab."),
    serve_app: bool = typer.Option(True, "--serve/--no-serve", help="Serve the dashboard at the end."),
) -> None:
    """The main job: the real CONUS run, the synthetic retrieval run, then the dashboard on both.

    Real: the real 0.25° covariate cube, the KAN hybrid trained on the shipped NWCA 2011 + SoDaH profiles (5-fold 2° block CV, the demo schedule DEMO_REAL_CONFIG), CONUS maps with the fold ensemble. Synthetic: the twin, the KAN with the default schedule, maps. The dashboard opens on the real run; its run picker lists the other. Each step is skipped when its output exists, so a second `socmap demo` starts in seconds.
    """
    import time as _time

    from socmap.mapping import MapOptions, map_run, summary_lines
    from socmap.train_config import load_config

    t0 = _time.perf_counter()
    steps: list[tuple[str, str, float, float]] = []
    runs: list[Path] = []

    def train_step(cfg, out: Path) -> None:
        from socmap.train import train as run_training

        record = run_training(cfg, out, resume=out.exists())
        mean = record["metrics"]["cv"]["mean"]
        console.print(f"held-out NSE {mean['nse']:.3f}, NSE(log) {mean['nse_log']:.3f} "
                      f"({record['data']['n_sites']} sites, {record['data']['n_obs']} layers)")
        for name, v in record["metrics"].get("param_recovery", {}).items():
            console.print(f"  recovery of {name}: R² {v['r2']:.3f}")

    def map_step(out: Path) -> None:
        for line in summary_lines(map_run(out, MapOptions(ensemble=True))):
            console.print(line)

    if real:
        from socmap.data.realcube import RealDataMissing, write_real_cube

        try:
            _demo_step("real 1/3: real covariate cube (0.25°)", (real_dir / "cube.zarr").exists(), steps,
                       lambda: write_real_cube(real_dir, 0.25, overwrite=real_dir.exists()))
        except RealDataMissing as exc:
            console.print(f"[yellow]skipping the real run:[/yellow] {exc}")
            real = False
    if real:
        try:
            _demo_step("real 2/3: KAN on the shipped NWCA + SoDaH profiles", (real_run / "run.json").exists(),
                       steps, lambda: train_step(load_config(**DEMO_REAL_CONFIG, data_dir=str(real_dir)), real_run))
            _demo_step("real 3/3: mapping CONUS (fold ensemble)", (real_run / "maps.zarr").exists(), steps,
                       lambda: map_step(real_run))
        except (ValueError, FileNotFoundError, FileExistsError) as exc:
            raise _fail(exc) from None
        runs.append(real_run)

    def synth_step() -> None:
        from socmap.data.synthetic import SynthConfig, write_synthetic

        write_synthetic(data_dir, SynthConfig(), overwrite=data_dir.exists(), progress=True)

    try:
        _demo_step("synthetic 1/3: CONUS twin", (data_dir / "truth.json").exists(), steps, synth_step)
        _demo_step("synthetic 2/3: KAN hybrid (5-fold 2° block CV)", (run / "run.json").exists(), steps,
                   lambda: train_step(load_config(data_dir=str(data_dir)), run))
        _demo_step("synthetic 3/3: mapping CONUS (fold ensemble)", (run / "maps.zarr").exists(), steps,
                   lambda: map_step(run))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise _fail(exc) from None
    runs.append(run)

    table = Table(title=f"socmap demo: ready in {_time.perf_counter() - t0:.0f} s ({_cpu_s():.0f} CPU s)")
    for col in ("step", "", "wall s", "user CPU s"):
        table.add_column(col)
    for title, status, seconds, cpu in steps:
        built = status == "built"
        table.add_row(title, status, f"{seconds:.0f}" if built else "—", f"{cpu:.0f}" if built else "—")
    console.print(table)
    tot = Table(title="CONUS SOC totals (Pg C; ± fold SD, upper bound)")
    for col in ("run", "0–30 cm", "0–100 cm", "land km²"):
        tot.add_column(col)
    for r in runs:
        t = _run_totals(r)
        if t is None:
            continue
        cells = []
        for name in ("soc_stock_0_30cm", "soc_stock_0_100cm"):
            e = t["stocks"].get(name)
            cells.append("—" if e is None else f"{e['total_pg_c']:.1f}" + (f" ± {e['spread_pg_c']:.1f}" if e["spread_pg_c"] is not None else ""))
        tot.add_row(r.name, *cells, f"{t['land_area_km2']:,.0f}")
    console.print(tot)
    if serve_app:
        console.rule("dashboard")
        serve(run=runs, port=port, address=address, show=show)


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

def _catalog_option() -> Any:
    return typer.Option(None, "--catalog", help="A user data catalog (YAML) laid over the shipped one: its entries replace or "
                        "add by name (also: SOCMAP_CATALOG=FILE).", show_default=False)


def _use_catalog(path: Path | None) -> None:
    """Validate the --catalog overlay and make it active for this process (CatalogError on a bad file)."""
    from socmap.data.catalog import use_catalog

    use_catalog(path)


def _config_option(field: str) -> Any:
    """A ``socmap train`` flag for the TrainConfig field ``field``: None unless given (the config
    file's value or TrainConfig's default applies), help text and default shown from the field."""
    from socmap.train_config import option_help

    return typer.Option(None, "--" + field.replace("_", "-"), help=option_help(field), show_default=False)


def _train_command() -> Any:
    """Train the hybrid model (or a baseline) with spatial cross-validation.

    Builds the ``socmap train`` command (see :class:`_LazyGroup`): its flags and their help come
    from TrainConfig (one place for every default), imported here rather than with this module.
    """
    from socmap.train_config import load_config

    sub = typer.Typer(add_completion=False)

    @sub.command("train")
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
        fold_workers: int | None = _config_option("fold_workers"),
        profiles: str | None = _config_option("profiles"),
        columns: Path | None = _config_option("columns"),
        cube_resolution: float | None = _config_option("cube_resolution"),
        catalog: Path | None = _catalog_option(),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    ) -> None:
        """Train the hybrid model (or a baseline) with spatial cross-validation.

        Missing data are built first: the synthetic twin (data/synthetic), or the real covariate cube
        for --data real-conus / --profiles FILE (a horizon table in any layout, read and checked as by
        `socmap profiles check`). The load report (rows kept, dropped by reason) goes into run.json.
        """
        from socmap.data.realcube import RealDataMissing
        from socmap.train import train as run_training

        try:
            _use_catalog(catalog)
            cfg = load_config(
                config, data=data, data_dir=str(data_dir) if data_dir else None, encoder=encoder, params=params,
                folds=folds, split=split, epochs=epochs, lr=lr, loss=loss, seed=seed, device=device,
                fold_workers=fold_workers, profiles=profiles, columns=str(columns) if columns else None, cube_resolution=cube_resolution,
            )
            record = run_training(cfg, out, resume=resume)
        except (ValueError, FileNotFoundError, FileExistsError, PermissionError, RealDataMissing) as exc:
            report = getattr(exc, "report", None)
            if report is not None:
                from socmap.cli_profiles import _print_report

                _print_report(report)
            raise _fail(exc, 3 if isinstance(exc, RealDataMissing) else 2) from None
        if "load_report" in record:
            _print_load_report(record["load_report"])
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
        if "cv_measured_bd" in m and "pooled" in m["cv_measured_bd"]:
            mb = m["cv_measured_bd"]
            console.print(f"measured bulk density only ({mb['n_obs']} obs; {mb['n_obs_bd_estimated']} with a pedotransfer "
                          f"estimate left out): pooled NSE {mb['pooled']['nse']:.3f}, NSE(log) {mb['pooled']['nse_log']:.3f}")
        console.print(f"wrote {out / 'run.json'} in {record['timing']['total_s']:.0f} s")

    return typer.main.get_command(sub)


_LAZY_COMMANDS["train"] = "_train_command"


def _print_load_report(report: dict) -> None:
    """The run's load report (run.json ``load_report``) as a table: rows read, dropped by reason, kept."""
    t = report["totals"]
    table = Table(title="profiles: rows read, dropped by reason, kept")
    for col in ("", "rows", "sites"):
        table.add_column(col, justify="right" if col else "left")
    for src in report["sources"]:
        table.add_row(f"{src['source']} read", str(src["rows_read"]), str(src.get("sites", "")))
    sites = report.get("sites_dropped_by_reason", {})
    for reason, n in report["dropped_by_reason"].items():
        table.add_row(f"dropped: {reason}", str(n), str(sites.get(reason, "")))
    table.add_row("[bold]kept[/bold]", f"[bold]{t['rows_kept']}[/bold]", f"[bold]{t['sites_kept']}[/bold]")
    table.add_row("bulk density measured / pedotransfer-filled", f"{t['bd_measured_rows']} / {t['bd_estimated_rows']}", "")
    console.print(table)
    for src in report["sources"]:
        for field, u in (src.get("units") or {}).items():
            console.print(f"  {src['source']}: {field} ({u['column']}) in {u['unit']}, {u['how']}", highlight=False)


def _allow_partial_option() -> Any:
    return typer.Option(False, "--allow-partial", help="Use the fold models that load when some are missing or "
                        "damaged (recorded in the output); without it such a run is an error.")


def _device_option() -> Any:
    return typer.Option("auto", "--device", help="Where the encoder and solver run: auto (a CUDA GPU when there "
                        "is one, else the CPU) | cpu | cuda | cuda:N.")


@app.command()
def predict(
    run: Path = typer.Option(..., "--run", help="A finished run folder (runs/NAME): hybrid or baseline (rf, nn)."),
    points: Path = typer.Option(..., "--points", help="CSV with columns lon, lat, depth_m."),
    out: Path = typer.Option(..., "--out", help="Output CSV (input columns + status, SOC, stocks, hybrid parameters); a record goes to OUT.json."),
    batch_size: int = typer.Option(8192, "--batch-size", help="Points per batch (memory grows with it, not with the file)."),
    allow_partial: bool = _allow_partial_option(),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Rows with missing or out-of-range values get a status instead of stopping the run."),
    device: str = _device_option(),
    workers: int | None = typer.Option(None, "--workers", help="Processes predicting batches side by side "
                                          "(default: one per CPU core; 1 on a GPU). The output is the same for any number."),
) -> None:
    """SOC (and, for a hybrid run, parameters) at points, from the run's fold ensemble and covariate cube."""
    from socmap.predict import PointsError, predict_file
    from socmap.runs import RunError

    try:
        record = predict_file(run, points, out, batch=batch_size, allow_partial=allow_partial, skip_bad_rows=skip_bad_rows,
                              device=device, workers=workers)
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
    device: str = _device_option(),
) -> None:
    """Map a trained run (hybrid or baseline) over the grid into its Zarr run store (resumable; see socmap.mapping)."""
    from socmap.mapping import MappingError, map_run, summary_lines
    from socmap.runs import RunError
    from socmap.store import StoreError

    try:
        record = map_run(run, resolution=resolution, chunks=chunks, scheduler=scheduler, ensemble=ensemble,
                         compare=str(compare) if compare else None, workers=workers, method=method,
                         allow_partial=allow_partial, device=device)
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
    catalog: Path | None = _catalog_option(),
) -> None:
    """Build a covariate cube on the CONUS grid (the twin's grid), written atomically.

    Raster entries (kind raster) of the catalog and its overlays are added as covariate layers.
    """
    from socmap.data.rasters import raster_entries
    from socmap.data.realcube import RealDataMissing, write_real_cube

    if source != "real-conus":
        console.print(f"[red]error:[/red] unknown --source {source!r}; available: real-conus (the synthetic twin: `socmap synth`)")
        raise typer.Exit(2)
    try:
        _use_catalog(catalog)
        meta = write_real_cube(out, resolution, overwrite=overwrite, rasters=raster_entries(), progress=True)
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
    from rich.markup import escape

    from socmap.runs import RunError, open_run

    # A damaged run is never a blank page: when every run given is damaged, one clear error before
    # the server starts; otherwise a warning here and an error panel for that run in the dashboard.
    damaged = []
    for r in run:
        try:
            open_run(r, allow_partial=allow_partial)
        except RunError as exc:
            damaged.append(exc)
    if damaged and len(damaged) == len(run):
        raise _fail(damaged[0]) from None
    for exc in damaged:
        console.print(f"[yellow]warning:[/yellow] {escape(str(exc))} (the dashboard shows this run as an error panel)",
                      highlight=False, soft_wrap=True)
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
from socmap.cli_scenario import scenario_command  # noqa: E402  (the command lives in its own module)
app.command("scenario")(scenario_command)


if __name__ == "__main__":  # pragma: no cover
    app()

