"""The same job on a Ray cluster: one shared quota, the same results folder (`batchgen run --engine ray`).

engine     the driver: checks, the folder's lock, the Ray Data pipeline, commits, the manifest
authority  the cluster's one rate limiter, ledger of worker figures and stop flag (a Ray actor)
link       a worker's side of the authority: the runner's Limiter and Admission, batched calls, reports
worker     the Ray Data UDF: batchgen's runner in an actor, a block of rows in, their results out
rows       the input as Ray reads it (line / row numbers kept), and blocks back into Prompts
commit     the driver writing what workers answer as this run's parts, counted and priced
done       the ids a rerun skips, in a form every process can look up

Needs the `ray` extra (`pip install batchgen[ray]`); nothing outside this package imports Ray, and
`batchgen.api` imports this package only for a job whose engine is "ray".
"""
