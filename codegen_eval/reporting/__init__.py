"""The run record and what is made from it: results, summary, report pages, comparisons, progress."""
