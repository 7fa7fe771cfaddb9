import sys

from logitscope.cli import main

sys.exit(main())
