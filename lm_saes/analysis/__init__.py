"""Feature analysis: top contexts, quantile samples, histograms, logit lens."""

from lm_saes.analysis.analyze import AnalysisResult, run_analysis
from lm_saes.analysis.collector import FeatureCollector
from lm_saes.analysis.show import format_feature

__all__ = ["AnalysisResult", "FeatureCollector", "format_feature", "run_analysis"]
