"""Suite-wide test settings."""

from __future__ import annotations

import torch

# CI has 2 cores and runs 2 pytest workers: one torch thread each avoids oversubscription,
# which slows torch's CPU kernels down by an order of magnitude.
torch.set_num_threads(1)
