"""`carpool bench`: the load generator that measures Carpool's batching against the raw model.

`command` is the entry point; `texts` generates the traffic (or reads the user's), `tiny` builds the
tiny BERT that measures the front end alone, `reference` measures the raw model in-process,
`rounds` schedules the cells between measurements of the references and reads each cell against
its own moment, `runner` carries the schedule out, `loadgen` drives the server over HTTP, `server`
spawns and configures it, `report` turns the figures into the tables and ratios, and `plot` draws
them.
"""
