"""Money and figures: prices, the cost of results folders, estimates before a run, and their rendering.

pricing    the price table and the billing arithmetic over token counts
budget     a run's running cost, and the cost cap
breakdown  results folders priced row by row and summed by model, status, run and day
estimate   rows, tokens, cost and duration of a job before it runs
text       the report as a table, CSV, JSON or Markdown
html       the report as a self-contained HTML page (with `svg` charts)
"""
