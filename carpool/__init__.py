"""The `carpool` command line, on top of everything else (see cli.py).

The tree below it, enforced by .importlinter: `carpool` > the tools (`carpool_bench`, `carpool_train`,
in tools/) | the operator (`carpool_operator`, in operator/) > the serving pod (`serving`). The pod
imports none of the others, so the serving image installs the pod alone.
"""
