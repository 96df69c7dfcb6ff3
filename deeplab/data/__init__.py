"""PASCAL VOC 2012 data: colour map and label files, a synthetic generator, preparation, pipeline.

Modules (one idea each):

* ``voc``          class names, VOC colour map, label PNG read/write, colourising masks
* ``layout``       where a data root keeps its images, labels and split lists
* ``synth``        ``deeplab-synth``: a synthetic data set in the VOC 2012 layout
* ``prepare_voc``  ``deeplab-prepare-voc``: index labels, split lists, MindRecord shards
* ``augment``      the train-time augmentation (scale, pad, crop, flip, normalise), pure numpy/OpenCV
* ``pipeline``     ``mindspore.dataset`` pipelines for training and evaluation

Only ``pipeline`` (and ``prepare_voc --mindrecord``) import MindSpore.
"""
