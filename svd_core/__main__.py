"""`python -m svd_core generate --checkpoint FILE --image IMG --output out.webp|out.gif|out.mp4`."""
from .cli import main

raise SystemExit(main())
