"""tandem gateway: the OpenAI-compatible HTTP surface, config, storage, limits and the CLI."""
