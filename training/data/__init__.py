"""Data sources for the trainers."""
