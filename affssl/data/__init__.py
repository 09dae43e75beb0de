"""Data: sources and folder layouts → decoded uint8 splits, the tensor cache, batches.

Modules, one job each: dataset (Split, Dataset, DataError), sources (digits, torchvision sets,
Caltech-101, folders), folders (folder layouts and scanning), imagenet (ILSVRC-2012's val labels,
the Kaggle tree, class lists such as ImageNet-100), decode (image bytes → uint8 through
TorchCodec), tensorfile (memory-mapped safetensors, atomic writes), cache (the decoded uint8
cache), batches (epoch batches, subsets), load (load_dataset); for large sets (docs/large-data.md):
storage (which storage feeds a run), chunkwrite / chunkread (JPEG chunk files), crops (whole-image
random-resized crops).
"""

from affssl.data.batches import batches, stratified, subset
from affssl.data.cache import FORMAT_VERSION, cache_dir
from affssl.data.dataset import DataError, Dataset, Loaded, Split
from affssl.data.load import load_dataset
from affssl.data.sources import TORCHVISION

__all__ = [
    "FORMAT_VERSION",
    "TORCHVISION",
    "DataError",
    "Dataset",
    "Loaded",
    "Split",
    "batches",
    "cache_dir",
    "load_dataset",
    "stratified",
    "subset",
]
