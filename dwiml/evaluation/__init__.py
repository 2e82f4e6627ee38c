"""Evaluation of tractograms against ground truth."""
