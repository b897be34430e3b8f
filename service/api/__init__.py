"""The FastAPI server: POST /forecast, POST /classify, health, metadata and metrics."""
