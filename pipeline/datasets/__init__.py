"""The datasets: the built-in one (``synthetic``) and the real ones -- CamVid, PASCAL VOC 2012 (alone,
and with SBD's augmented training set), Cityscapes, ADE20K -- each as its publisher defines it.

Each dataset is a :class:`torch.utils.data.Dataset` whose items are
``(image, label)``: ``image`` a float32 tensor (3, H, W) normalised with the ImageNet
mean and std, ``label`` an int64 tensor (H, W) of class indices in
``[0, NUM_CLASSES)`` with ``IGNORE_INDEX`` (255) for pixels to ignore.

An optional ``transform(image, label, rng) -> (image, label)`` receives the uint8 HWC image,
the already-mapped HW label as NumPy arrays, before normalisation, and a NumPy random generator
seeded by the item: ``dataset[(index, seed)]`` seeds it with ``seed`` (training draws one seed per
sample, so an augmented batch is a function of the seed alone), ``dataset[index]`` with ``index``.
:class:`RandomScaleCropFlip` is the training augmentation. ``verify()`` opens every file and
reports the first problem.

:func:`prepare` downloads, verifies and extracts a dataset into a data root (and, for
``voc2012aug``, converts SBD into the layout mmsegmentation's converter produces); the URLs and
checksums live in :data:`SOURCES` (tests point them to a loopback server).

Modules, one idea each (a module imports only those above it):

- ``reading``       image and label files, :class:`DatasetError`, normalisation
- ``base``          ``IGNORE_INDEX``, split files, :class:`SegmentationDataset`
- ``augmentation``  :class:`RandomScaleCropFlip`, ``PAD_RGB``
- ``camvid``, ``voc`` (VOC 2012, voc2012aug and SBD's conversion), ``cityscapes``, ``ade20k``,
  ``keyed_shapes`` (the built-in dataset)   one module per dataset family
- ``registry``      :data:`DATASETS`, every name ``--dataset`` takes, and :func:`dataset_class`
- ``sources``       :data:`SOURCES`, the archives' URLs and checksums
- ``preparation``   :func:`prepare`, :func:`expected_layout`, the downloads

A new dataset is a module here, a line in ``registry`` (and an entry in ``sources`` if it can be
downloaded).
"""

from danet.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 -- pipeline.report, device_data read them here
from pipeline.datasets.reading import DatasetError, normalize, read_image, read_label  # noqa: F401
from pipeline.datasets.base import IGNORE_INDEX, SegmentationDataset, read_split_file  # noqa: F401
from pipeline.datasets.augmentation import PAD_RGB, RandomScaleCropFlip  # noqa: F401
from pipeline.datasets.camvid import CamVid  # noqa: F401
from pipeline.datasets.voc import (VOC2012, VOC2012Aug, build_voc2012aug, find_sbd,  # noqa: F401
                                   read_sbd_label, trainaug_lists)
from pipeline.datasets.cityscapes import CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_LOGIN_HELP, Cityscapes  # noqa: F401
from pipeline.datasets.ade20k import ADE20K  # noqa: F401
from pipeline.datasets.keyed_shapes import KeyedShapes  # noqa: F401
from pipeline.datasets.registry import DATASETS, dataset_class  # noqa: F401
from pipeline.datasets.sources import SOURCES  # noqa: F401
from pipeline.datasets.preparation import expected_layout, prepare  # noqa: F401
