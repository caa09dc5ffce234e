#!/usr/bin/env python3
"""Thin wrapper: ``python tools/prepare_data.py ...`` == ``python -m msmt_tf.prepare_data ...``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msmt_tf import prepare_data  # noqa: E402

if __name__ == "__main__":
    prepare_data.run()
