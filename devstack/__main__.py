"""`python -m devstack`: run the local stack in the foreground.

`python -m devstack job NAME` runs one of the workers' scheduled jobs now,
against the running stack (devstack/jobs.py).

`python -m devstack logs VIDEO_ID` prints one video's story from the local
logs (devstack/logs.py).
"""

import sys

if sys.argv[1:2] == ["job"]:
    from devstack.jobs import main as run_job

    raise SystemExit(run_job(sys.argv[2:]))

if sys.argv[1:2] == ["logs"]:
    from devstack.logs import main as show_logs

    raise SystemExit(show_logs(sys.argv[2:]))

from devstack.stack import main

raise SystemExit(main())
