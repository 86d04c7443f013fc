import sys

from headcap.cli import main

sys.exit(main())
