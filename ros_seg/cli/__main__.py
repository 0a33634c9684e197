import sys

from ros_seg.cli import main

sys.exit(main())
