"""yolo_nano.data: VOC reader, synthetic data set, augmentation, VOC/COCO metrics (numpy, no torch)."""
