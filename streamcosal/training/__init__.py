"""Training: jigsaw data (manifests, composites, copy-paste), the TOML config, the loop and its
validation."""
