import sys

from llmos_tui.cli.main import main

sys.exit(main())
