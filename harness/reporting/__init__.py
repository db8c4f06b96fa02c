"""Reports from records: results frame, statistics, tables, sections, figures, findings, number formatting."""
