"""Stage 2, the models: the built-in zoo, the one factory (names, files, import paths, entry points), descriptions."""
