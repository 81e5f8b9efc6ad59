"""The registry: every dataset the pipeline knows, by the name ``--dataset`` takes, the built-in one
included. Help texts and checks derive their lists from :data:`DATASETS`; a new dataset is one
module of this package and one line here."""

from pipeline.datasets.ade20k import ADE20K
from pipeline.datasets.camvid import CamVid
from pipeline.datasets.cityscapes import Cityscapes
from pipeline.datasets.keyed_shapes import KeyedShapes
from pipeline.datasets.voc import VOC2012, VOC2012Aug

DATASETS = {"synthetic": KeyedShapes, "camvid": CamVid, "voc2012": VOC2012, "voc2012aug": VOC2012Aug,
            "cityscapes": Cityscapes, "ade20k": ADE20K}


def dataset_class(name: str):
    """The Dataset class of ``name``, a key of :data:`DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]
