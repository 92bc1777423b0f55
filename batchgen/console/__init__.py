"""What a person or a scheduler sees of a run: the progress display and the log lines.

progress  a live display at a terminal, a progress line every N seconds elsewhere
logs      logging set-up (text or JSON lines), key redaction, the run's events
"""
