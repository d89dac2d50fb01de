import sys

from yachay_cli.main import main

sys.exit(main())
