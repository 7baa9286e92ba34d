"""yolo_nano.benchmarks"""
