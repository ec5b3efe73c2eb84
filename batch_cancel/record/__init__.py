"""The record stage: what a run did, kept as it happens and reported at the end.

`journal` (the write-ahead journal of one tenant, read back by a resume), `paths` (where the
report and journal go, checked before anything is sent), `writer` (the report, in input
order), `tally` (the summary counts), `sinks` (CSV, JSON lines, Excel, Parquet) and
`workbook` (the Excel layout).
"""
