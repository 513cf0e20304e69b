"""keras-tuner hypermodels and grid searches over `mnistcompare.Config` (to come)."""
