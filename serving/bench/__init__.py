"""`carpool bench`: the load generator that measures Carpool's batching against the raw model.

`command` is the entry point; `texts` generates the traffic, `reference` measures the raw model
in-process, `loadgen` drives the server over HTTP, `server` spawns and configures it, `report`
turns the figures into the table and ratios, and `plot` draws them.
"""
