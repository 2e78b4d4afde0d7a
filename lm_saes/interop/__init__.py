"""Formats of other tools (SAELens now; circuit-tracer and Neuronpedia later)."""

from lm_saes.interop.saelens import export_saelens, import_saelens

__all__ = ["export_saelens", "import_saelens"]
