"""yolo_nano.core: the torch-free contract every layer shares.

Model metadata, file I/O, the one image reader, letterbox preprocessing, decode/NMS (the numpy
reference) and the ``Backend`` base class. Imports nothing from the other subpackages.
"""
