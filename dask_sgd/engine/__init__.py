"""Training engines: the shared epoch loop and the in-process runner."""
