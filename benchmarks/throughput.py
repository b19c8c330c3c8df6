"""The cost of adaptation: images/s of the DANN step vs a plain supervised step on the same images, the data-wait
fraction and peak memory. The same code as ``dann bench`` (``dann.bench``); the same flags.

    python benchmarks/throughput.py --backbone lenet
    python benchmarks/throughput.py --backbone resnet18 --json
    python benchmarks/throughput.py --backbone resnet50 --precision bf16 --channels-last   # on a GPU
"""

from __future__ import annotations

import sys

from dann.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
