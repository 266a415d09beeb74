"""Stage 5, the report: groups of run records, rules, statistics, tables, plots, compare, export, the reference."""
