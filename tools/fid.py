"""FID between two image folders / TTUR .npz files; see ``msmt_tf/fid.py`` for the flags.

  python tools/fid.py PATH_A PATH_B [--batch_size=50] [--save_stats=a.npz]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf import fid  # noqa: E402

if __name__ == "__main__":
    fid.run()
