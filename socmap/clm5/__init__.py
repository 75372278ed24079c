"""The CLM5 vertically resolved soil-carbon matrix model (7 pools × 20 layers), differentiable."""

from socmap.clm5.diagnostics import DIAGNOSTICS, bulk_diagnostics
from socmap.clm5.forcing import Forcing
from socmap.clm5.observe import interpolate_to_depths, soc_nodes, standard_stocks, stock_kg_m2
from socmap.clm5.operators import PreparedForcing, build_operators, prepare_forcing
from socmap.clm5.parameters import NAMES as PARAMETER_NAMES
from socmap.clm5.parameters import PARAMETERS, to_physical, to_unit
from socmap.clm5.solver import SingularSystemWarning, steady_state

__all__ = [
    "DIAGNOSTICS", "Forcing", "PARAMETERS", "PARAMETER_NAMES", "PreparedForcing", "SingularSystemWarning",
    "build_operators", "bulk_diagnostics", "interpolate_to_depths", "prepare_forcing", "soc_nodes",
    "standard_stocks", "steady_state", "stock_kg_m2", "to_physical", "to_unit",
]
