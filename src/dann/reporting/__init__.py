"""What a run tells its reader: the report and the comparison of runs (``report``), their figures (``plots``) and
the Markdown/HTML page model (``pages``)."""
