"""Model code shared by the trainer and the server (no web framework imported here)."""
