"""The activation service: a language model and cached SAEs behind gRPC (`python -m services.activation`)."""
