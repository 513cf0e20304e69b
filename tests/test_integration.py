"""Real MNIST: the reports' protocol end to end."""

import numpy as np
import pytest

from mnistcompare.data import find_source, load_pairs
from mnistcompare.reports import preset

pytestmark = pytest.mark.slow


def test_real_pairs_look_like_the_reports(mnist_dir):
    train, test = load_pairs(preset("report000-siamese"), find_source(data_dir=mnist_dir))
    assert len(train) == len(test) == 1000
    assert 0.48 < train.target.mean() < 0.62  # about 55 % of targets are 1
    assert 30 < train.image_a.mean() < 37 and train.image_a.max() <= 255  # pixel scale, MNIST mean ~33.3
    assert set(np.unique(train.digit_a)) == set(range(10))


def test_report000_siamese_reaches_0_90_and_its_saved_model_scores_the_same(trained_run):
    out, metrics, test = trained_run
    assert metrics["test_accuracy"] >= 0.90, metrics
    assert metrics["test_digit_accuracy"] >= 0.90, metrics
    assert metrics["params"] == 23833  # PyTorch's count of report 000's Appendix A

    import tensorflow as tf

    loaded = tf.saved_model.load(str(out / "saved_model" / "1"))  # keep a reference: it owns the variables
    served = loaded.serve(test.image_a, test.image_b)["compare"].numpy()
    assert np.mean((served > 0.5) == (test.target == 1)) == metrics["test_accuracy"]
