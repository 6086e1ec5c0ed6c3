"""`python -m diet_hf`: the `diet-hf` command, as `python -m diet_hf.cli` runs it."""

from .cli import main

raise SystemExit(main())
