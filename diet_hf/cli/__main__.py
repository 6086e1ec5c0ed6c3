"""`python -m diet_hf.cli`: the `diet-hf` command."""

from . import main

raise SystemExit(main())
