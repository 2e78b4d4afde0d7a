"""Autointerp: explain features with a language model, score the explanations, search them."""
