"""llm-metering-proxy: a transparent, OpenAI-compatible metering proxy for LLM APIs."""
