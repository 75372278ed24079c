"""PLACEHOLDER for the merge of issue 11: helper "cells" moves ``truth_edge_function`` out of the
twin generator into this module. Drop this file in favour of that one."""

from socmap.data.synthetic import truth_edge_function

__all__ = ["truth_edge_function"]
