"""FID between image folders, TTUR .npz files and checkpoints; see ``msmt_tf/fid.py``.

  python tools/fid.py PATH_A PATH_B [--batch_size=50] [--save_stats=a.npz]
  python tools/fid.py runs/x stats/cub_test.npz [--captions=test|train|FILE] [--num_images=30000]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf import fid  # noqa: E402

if __name__ == "__main__":
    fid.run()
