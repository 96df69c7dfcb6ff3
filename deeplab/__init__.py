"""DeepLabV3 semantic segmentation on MindSpore: model, data, train, eval, infer, export.

Importing this package does not import MindSpore; entry points do, after tuning the CPU.
"""
