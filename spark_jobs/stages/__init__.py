"""One module per pipeline stage. Each exposes pure DataFrame functions and ``run(context)``."""
