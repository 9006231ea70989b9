"""Datasets, loaders and federated partitioners.

Every loader returns an :class:`ImageDataset` (float32 ``(N, C, H, W)`` in ``[0, 1]``, int64
labels); every data problem raises a subclass of :class:`secfed.errors.DataError`.

The public names are those of the submodules' ``__all__`` lists (each module's list is the one
place its names are written), re-exported here.
"""

from secfed.data import dataset as _dataset
from secfed.data import digits as _digits
from secfed.data import errors as _errors
from secfed.data import medmnist as _medmnist
from secfed.data import omniglot as _omniglot
from secfed.data import partition as _partition
from secfed.data import registry as _registry
from secfed.data.dataset import *  # noqa: F403
from secfed.data.digits import *  # noqa: F403
from secfed.data.errors import *  # noqa: F403
from secfed.data.medmnist import *  # noqa: F403
from secfed.data.omniglot import *  # noqa: F403
from secfed.data.partition import *  # noqa: F403
from secfed.data.registry import *  # noqa: F403

__all__ = [
    *_dataset.__all__,
    *_errors.__all__,
    *_digits.__all__,
    *_medmnist.__all__,
    *_omniglot.__all__,
    *_partition.__all__,
    *_registry.__all__,
]
