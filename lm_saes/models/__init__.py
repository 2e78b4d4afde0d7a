"""Language models with TransformerLens hook names."""

from lm_saes.models.language_model import LanguageModel, hook_layer, load_language_model
from lm_saes.models.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer

__all__ = ["ByteTokenizer", "HFTokenizer", "LanguageModel", "Tokenizer", "hook_layer", "load_language_model"]
