"""Backends: one served model each (OpenAI-compatible/vLLM over HTTP, LiteLLM providers, in-process models)."""
