"""Offline trainers for the latent ODE and the MNIST classifiers (never imports FastAPI)."""
