"""SAE training: the loop, its schedules and checkpoints."""

from lm_saes.training.trainer import Trainer, TrainSummary, explained_variance, lr_factor

__all__ = ["TrainSummary", "Trainer", "explained_variance", "lr_factor"]
