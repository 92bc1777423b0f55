"""Gemini's `generateContent` wire format, as pure functions over bytes and decoded JSON (no I/O).

    request    a job's request body, serialised once; each row's `contents` spliced in; token estimates
    response   a `GenerateContentResponse` read into a `Reply`
    stream     `streamGenerateContent?alt=sse`: SSE decoding, events folded into one response
    errors     google.rpc error bodies mapped to `batchgen.errors`
    thinking   `thinkingConfig` checked against the model family
    batch      the Batch API: JSONL input lines, job operations, results lines

Field names and shapes follow the v1beta REST API (shared/reference/gemini-api.md); the local server
(`batchgen.fakeserver`) implements the same format independently.
"""
