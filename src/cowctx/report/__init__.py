"""Comparisons, sweeps, tables, plots, graphs and the HTML report."""
