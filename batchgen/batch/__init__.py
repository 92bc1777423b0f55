"""The Batch API carrier: rows sent as batch jobs (half price, answers within 24 h) on the same results contract.

    client     the Files and Batch APIs over HTTP: upload, create, poll, find, cancel, download, delete
    carrier    a run's rows spooled into jobs, the jobs of earlier runs taken up, ended jobs collected
    follow     one job's life: upload, create (or find), poll, the deadline's cancel, the results download
    collect    a job's results file joined with its input rows by key into results, follow-ups and online rows
    online     rows that leave the Batch API (past a deadline, re-asked online) run through the online runner
    control    `batchgen status` and `batchgen cancel`: a folder's jobs looked at or stopped

It sits beside `online/` and reuses what is below both: request bodies (`gemini.request`), the wire format
(`gemini.batch`, `gemini.response`), the verdict and a row's result (`results.verdict`, `results.rows`), and
the folder's durable record of its jobs (`results.batches`). The online runner reaches it injected, as a
factory, so this package never imports `online/`.
"""
