"""Tracking: seeds, stopping rules, the classical dipy baseline."""
