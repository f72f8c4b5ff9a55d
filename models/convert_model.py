"""Shim for the original workflow: ``cd models; python convert_model.py ARCH IN OUT``.

Runs the repository root's convert_model.py (see there); relative paths stay
relative to the current directory.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402
import convert_model  # noqa: E402  (the root script: the root is first on sys.path)

if __name__ == '__main__':
    cli.run_main(convert_model.main)
