"""The model side of the assistant: presets and fetching (:mod:`.presets`), our engine as a
LangChain ``LLM`` and chat model (:mod:`.llm`, :mod:`.chat_model`, sharing :mod:`.engine_params`
and the loaded model of :mod:`.engine_runtime`), chat formats (:mod:`.chat_format`), and a served
OpenAI-compatible model (:mod:`.served`)."""
