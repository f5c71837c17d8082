"""The assistant: the engine as LangChain parts, guideline retrieval, cited answers, the notice."""
