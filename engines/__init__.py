"""yolo_nano.engines"""
