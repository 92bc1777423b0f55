"""The results contract and the results folder: what a row becomes, and where it is kept.

verdict   a reply -> a row status (the precedence rules)
metadata  grounding, function calls, citations and safety ratings as typed columns
sink      finished rows -> durable Parquet parts, and the folder's manifest
resume    the folder read back: ids already done, compaction to one row per id
"""
