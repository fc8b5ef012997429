"""`python -m edgeprof` is the same as the `edgeprof` command."""

from edgeprof.cli import main

main()
