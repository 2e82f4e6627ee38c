"""Figures: training curves."""
