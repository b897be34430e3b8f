"""Request and response bodies (pydantic): what the OpenAPI docs show and the first validation."""
