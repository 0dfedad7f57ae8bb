import sys

from worldflux_gym.cli import main

sys.exit(main())
