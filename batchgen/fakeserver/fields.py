"""The request fields and enum values the API knows: anything else in a body is a 400 ("Unknown name").

Proto JSON names (lowerCamelCase); `request` also accepts their snake_case spellings, as Google's parser does.
"""

from __future__ import annotations

TOP_FIELDS = frozenset(
    [
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
        "cachedContent",
        "serviceTier",
        "model",
        "labels",
    ]
)
GENERATION_FIELDS = frozenset(
    [
        "candidateCount",
        "stopSequences",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "responseModalities",
        "thinkingConfig",
        "speechConfig",
        "imageConfig",
        "mediaResolution",
        "enableEnhancedCivicAnswers",
    ]
)
PART_DATA = frozenset(
    [
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
    ]
)
PART_FIELDS = PART_DATA | frozenset(["thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"])
TOOL_FIELDS = frozenset(
    [
        "functionDeclarations",
        "googleSearchRetrieval",
        "codeExecution",
        "googleSearch",
        "computerUse",
        "urlContext",
        "fileSearch",
        "googleMaps",
    ]
)
FUNCTION_FIELDS = frozenset(
    [
        "name",
        "description",
        "parameters",
        "parametersJsonSchema",
        "response",
        "responseJsonSchema",
        "behavior",
    ]
)
MIME_TYPES = frozenset({"text/plain", "application/json", "text/x.enum", "application/xml", "application/yaml"})
SCHEMA_MIME_TYPES = frozenset({"application/json", "text/x.enum"})
MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
CATEGORIES = frozenset(
    f"HARM_CATEGORY_{c}"
    for c in ["HATE_SPEECH", "SEXUALLY_EXPLICIT", "DANGEROUS_CONTENT", "HARASSMENT", "CIVIC_INTEGRITY"]
)
THRESHOLDS = frozenset(
    [
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ]
)
