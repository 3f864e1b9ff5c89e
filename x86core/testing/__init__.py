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
from .strategies import (EVENTS, Scenario, baseline_gdt, code_descriptors, data_descriptors,
                         descriptor, gate, gates, gdts, good_gates, idts, kernel_gates,
                         machine_states, page_maps, segment_descriptors, selectors, stack_tops,
                         system_descriptors, table_bytes, tss_contents)

__all__ = [
    "EVENTS", "Observed", "Scenario", "baseline_gdt", "code_descriptors", "data_descriptors",
    "descriptor", "expected", "gate", "gates", "gdts", "good_gates", "idts", "kernel_gates",
    "load_cpu", "machine_states", "page_maps", "run_scenario",
    "segment_descriptors", "selectors", "stack_tops", "system_descriptors", "table_bytes",
    "tss_contents",
]
