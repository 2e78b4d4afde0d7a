"""Autointerp: explain features with a language model, score the explanations, search them.

`llm`: the OpenAI-compatible chat client; `server`: a local server on the packaged SmolLM2;
`embedding`: the packaged sentence-embedding model (the embedding scorer, feature search);
`examples` and `negatives`: the contexts shown; `prompts` and `scorers`: delphi's tasks;
`run`: the resumable pass over an SAE's features that stores the results.
"""
