"""Response schemas, in both of Gemini's dialects: checked before anything is sent, validated per row, typed.

dialect     the two dialects and what they share (JSON pointers to problems)
openapi     `responseSchema`, Gemini's OpenAPI 3.0 subset: checks and conversion to JSON Schema
jsonschema  `responseJsonSchema`: metaschema and the API's own rules
arrow       top-level properties as typed Arrow columns
response    `ResponseSchema`: a job's schema loaded, checked, compiled and typed once
"""
