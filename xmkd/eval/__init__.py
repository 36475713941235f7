"""Evaluation: segmentation confusion matrices and mIoU, KITTI detection AP."""
