import sys

from shadowfs.cli import main

sys.exit(main())
