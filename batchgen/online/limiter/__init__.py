"""Admission under Gemini's per-minute and per-day quotas, one decision per HTTP attempt.

rate     `RateLimiter`: FIFO admission, pacing, 429 cooldowns and adaptive limits
window   the last minute of admissions against one quota
clock    time as an input: the event loop's clock, or a test's
"""
