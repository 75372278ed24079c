"""`socmap profiles …`: check a user's horizon table before training on it.

Exit status: 0 — the table loads (drops, if any, are listed); 1 — a row was dropped under
``--strict``, or no row can be kept; 2 — the file, the column map or a unit cannot be read as
given (the message names the file, the column, the rows and the fix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from socmap.data.intake import ColumnMap, ProfileDataError, line_list
from socmap.data.profiles import LoadReport, load_profile_table

profiles_app = typer.Typer(help="Check soil profile (horizon) tables.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _print_report(report: LoadReport) -> None:
    for rep in report.sources.values():
        counts = Table(title=f"{rep.source}: {', '.join(rep.files)}", show_lines=False)
        counts.add_column("rows")
        counts.add_column("count", justify="right")
        counts.add_column("lines (first)")
        counts.add_row("read", str(rep.rows_read), "")
        for reason, n in rep.dropped.items():
            counts.add_row(f"dropped: {reason}", str(n), line_list(rep.dropped_lines.get(reason, [])))
        counts.add_row("[bold]kept[/bold]", f"[bold]{rep.rows_kept}[/bold]",
                       f"{rep.sites} sites; bulk density measured {rep.bd_measured}, estimated {rep.bd_estimated}")
        console.print(counts)
        if rep.units:
            units = Table(title="units")
            for col in ("field", "column", "unit", "how"):
                units.add_column(col)
            for f, u in rep.units.items():
                units.add_row(f, u["column"], u["unit"], u["how"])
            console.print(units)
        for note in rep.notes:
            console.print(f"note: {note}", markup=False, highlight=False)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@profiles_app.command("check")
def check(
    file: Path = typer.Argument(..., help="Horizon table: .csv/.csv.gz/.tsv, .parquet (pyarrow) or .xlsx (openpyxl)."),
    columns: Optional[Path] = typer.Option(None, "--columns", help="Column map (YAML: columns: {field: column}, units: {field: unit})."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the per-row load report (line, kept/dropped, reason) as CSV."),
    tidy: Optional[Path] = typer.Option(None, "--tidy", help="Write the tidy profile table (site_id, lon, lat, top_m, bottom_m, soc_g_m3, …) as CSV."),
    strict: bool = typer.Option(False, "--strict", help="Any dropped row is an error (exit 1)."),
    organic_horizons: str = typer.Option("drop", "--organic-horizons",
                                         help="Horizons with a negative top depth (above the mineral surface): 'drop' them, "
                                              "or 'shift' each profile down so its organic top is depth 0."),
    bulk_density: str = typer.Option("fill", "--bulk-density",
                                     help="'fill' gaps with the pedotransfer estimate (flagged bd_estimated) or keep 'measured' only."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of a CSV file (e.g. latin-1)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source name (site ids are <source>:<site>); default: the file name."),
) -> None:
    """Read FILE as a horizon table, map its columns and units, check every row, print the load report."""
    if organic_horizons not in ("drop", "shift"):
        _fail(f"--organic-horizons must be 'drop' or 'shift', not {organic_horizons!r}", 2)
    if bulk_density not in ("fill", "measured"):
        _fail(f"--bulk-density must be 'fill' or 'measured', not {bulk_density!r}", 2)
    try:
        cmap = ColumnMap.from_yaml(columns) if columns is not None else None
        table, report = load_profile_table(file, columns=cmap, source=source, organic_horizons=organic_horizons,
                                           bulk_density=bulk_density, encoding=encoding)
    except ProfileDataError as exc:
        if exc.report is not None:
            _print_report(exc.report)
            if out is not None:
                exc.report.rows().to_csv(out, index=False)
        _fail(str(exc), 1 if exc.report is not None else 2)
        return
    _print_report(report)
    if out is not None:
        report.rows().to_csv(out, index=False)
        console.print(f"per-row report: {out}")
    if strict and report.rows_dropped:  # before --tidy: a failed check writes no tidy table
        parts = [f"{r}: {n} (lines {line_list(rep.dropped_lines[r])})" for rep in report.sources.values() for r, n in rep.dropped.items()]
        _fail(f"{file}: --strict and {report.rows_dropped} of {report.rows_read} rows dropped — {'; '.join(parts)}. "
              "Fix those rows in the file, or drop --strict to accept the drops", 1)
    if tidy is not None:
        table.to_csv(tidy, index=False)
        console.print(f"tidy table: {tidy} ({len(table)} rows)")
