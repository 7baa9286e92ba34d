"""yolo_nano.calibration"""
