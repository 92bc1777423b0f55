"""Where rows come from: JSONL or Parquet input, each row made a `Prompt` (or a reason it cannot be sent).

reader    files and folders read in bounded batches; the id scan
prompts   a row -> a Prompt: id, contents (template, field, media), kept columns
ids       millions of ids as packed hashes: repeated ids, the set of ids already done
"""
