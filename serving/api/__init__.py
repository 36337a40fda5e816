"""HTTP routes of the serving pod, one module per group of endpoints."""
