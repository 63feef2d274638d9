"""Evaluation: Co-SOD metrics per group and dataset, reports with tables and plots, and the
nightly history."""
