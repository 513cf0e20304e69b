"""keras-tuner grid searches over `mnistcompare.Config`, installed as `mnistcompare.tuning`.

`grid` parses and applies grids (no TensorFlow), `hypermodel` is the
keras-tuner HyperModel, `search` the grid oracle and the tuner that averages
several rounds per trial, `cli` the `mnistcompare-tune` command and its
chief + workers launcher.
"""
PROJECT = "keras_tuner"  # keras-tuner's project folder inside the output folder
