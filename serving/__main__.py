"""`python -m serving [serve] [FLAGS]` is `carpool serve`: the pod alone, without the other commands."""

import sys

from serving import command

argv = sys.argv[1:]
raise SystemExit(command.main(argv[1:] if argv[:1] == ["serve"] else argv))
