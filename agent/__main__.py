import sys

from edgetwin.agent.tools.cli import main

sys.exit(main())
