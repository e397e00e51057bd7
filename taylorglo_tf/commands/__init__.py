"""Subcommands of the ``taylorglo`` CLI (one module each; no TensorFlow at import)."""
