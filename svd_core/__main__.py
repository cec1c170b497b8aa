"""`python -m svd_core generate --checkpoint FILE --image IMG --output out.webp|out.gif|out.mp4`."""
from .app.cli import main

raise SystemExit(main())
