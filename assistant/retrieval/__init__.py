"""The retrieval side of the assistant: the ingest index as LangChain parts (embeddings, vector
store, retriever) and conversation follow-ups (:mod:`.followup`, measured by
:mod:`.followup_eval`)."""
