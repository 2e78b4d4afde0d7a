"""Autointerp: explaining SAE features with a language model and scoring the explanations.

`llm` holds the OpenAI-compatible chat client (`LLMSettings`, `ChatClient`); `server` starts a
local OpenAI-compatible server on the packaged SmolLM2 model (`LocalLLMServer`).
"""
