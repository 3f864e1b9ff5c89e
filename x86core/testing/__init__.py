"""Test support for the x86core machine: hypothesis strategies for
descriptors, gates, tables, TSSs, page maps and whole machine states
(`strategies`), and loading/running those states on a CPU (`machine`).

    from hypothesis import given
    from x86core import reference
    from x86core.testing import machine_states, expected, run_scenario

    @given(machine_states())
    def test_delivery_matches_the_sdm(scenario):
        assert run_scenario(scenario) == expected(scenario)
"""
from .machine import Observed, expected, load_cpu, run_scenario
from .strategies import (Scenario, code_descriptors, data_descriptors, descriptor, gate, gates,
                         gdts, idts, machine_states, page_maps, segment_descriptors, selectors,
                         stack_tops, system_descriptors, table_bytes, tss_contents)

__all__ = [
    "Observed", "Scenario", "code_descriptors", "data_descriptors", "descriptor", "expected",
    "gate", "gates", "gdts", "idts", "load_cpu", "machine_states", "page_maps", "run_scenario",
    "segment_descriptors", "selectors", "stack_tops", "system_descriptors", "table_bytes",
    "tss_contents",
]
