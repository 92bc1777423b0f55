"""The online carrier: each row sent as its own HTTP call, under rate limits, with retries.

    client     the aiohttp session: auth, URLs, HTTP answers -> decoded responses or `batchgen.errors`
    runner     bounded fan-out and each row's lifecycle (attempts, verdict, re-asks); no I/O of its own
    retry      which errors are retried and how long to wait
    limiter/   admission under RPM, input TPM and RPD quotas, adapting to 429s

A carrier that sends rows another way (a Batch API file) sits beside this package and reuses what is below
it: the wire format, the verdict on a reply, and the results contract.
"""
