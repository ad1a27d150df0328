"""`python -m devstack`: run the local stack in the foreground."""

from devstack.stack import main

raise SystemExit(main())
