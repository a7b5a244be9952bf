"""Config presets shipped in the package: ``NAME.yaml`` files read by :func:`gateway.config.read_preset`."""
