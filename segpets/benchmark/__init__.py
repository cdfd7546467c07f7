"""Throughput measurements behind ``segpets.bench``: timing helpers, the model side
(training and inference img/s) and the data side (loader img/s, end to end)."""
