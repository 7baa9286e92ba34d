"""yolo_nano.jetson: board control any app can use (nvpmodel, jetson_clocks, power rails). Needs core only."""
