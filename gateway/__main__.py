# PYTHON_ARGCOMPLETE_OK
from gateway.cli import main

raise SystemExit(main())
