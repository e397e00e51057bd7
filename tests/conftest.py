"""Test-suite settings shared by every test module.

Set before anything imports TensorFlow: quiet logs, the TensorFlow backend for
Keras, and a headless matplotlib.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
