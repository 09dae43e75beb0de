"""Bundled spec presets (TOML), loadable by name: default, paper, cifar10-cpu."""
