"""HTTP routes, thin: each checks its inputs through schemas and dependencies and delegates."""
