"""``python -m cowctx``."""

from cowctx.cli import main

main()
